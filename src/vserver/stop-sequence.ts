/**
 * What `stop` does next, decided from the elapsed time and whether the vserver is still running:
 * send the stop signal once, wait up to the timeout, then kill, then give up after a grace period.
 */
export type StopStep =
  | { action: 'signal' }
  | { action: 'wait' }
  | { action: 'kill' }
  | { action: 'done' }
  | { action: 'fail'; reason: string };

export interface StopProgress {
  signalled: boolean;
  killed: boolean;
  running: boolean;
  elapsedMs: number;
  timeoutMs: number;
}

const KILL_GRACE_MS = 5_000;

export function nextStopStep(p: StopProgress): StopStep {
  if (!p.running) return { action: 'done' };
  if (!p.signalled) return { action: 'signal' };
  if (!p.killed) return p.elapsedMs >= p.timeoutMs ? { action: 'kill' } : { action: 'wait' };
  if (p.elapsedMs >= p.timeoutMs + KILL_GRACE_MS)
    return { action: 'fail', reason: 'still running after SIGKILL' };
  return { action: 'wait' };
}
