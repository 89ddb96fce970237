/**
 * Whether to restart a failed vserver: at most `maxRestarts` restarts within a sliding `windowMs`.
 * Pure: the caller keeps the history of restart times and the clock.
 */
export interface RestartPolicy {
  policy: 'no' | 'on-failure';
  maxRestarts: number;
  windowMs: number;
}

export type RestartDecision = { restart: true; reason: string } | { restart: false; reason: string };

export function decideRestart(
  policy: RestartPolicy,
  history: readonly number[],
  now: number,
): RestartDecision {
  if (policy.policy === 'no') return { restart: false, reason: 'restart policy is "no"' };
  const recent = history.filter((t) => now - t < policy.windowMs).length;
  if (recent >= policy.maxRestarts) {
    return {
      restart: false,
      reason: `${recent} restarts in the last ${Math.round(policy.windowMs / 1000)}s (max ${policy.maxRestarts}): giving up`,
    };
  }
  return {
    restart: true,
    reason: `restart ${recent + 1} of ${policy.maxRestarts} in ${Math.round(policy.windowMs / 1000)}s`,
  };
}

/** The history to keep: only restarts still inside the window matter. */
export function pruneHistory(policy: RestartPolicy, history: readonly number[], now: number): number[] {
  return history.filter((t) => now - t < policy.windowMs);
}
