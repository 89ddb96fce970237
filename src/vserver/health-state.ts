/**
 * The health of one check as a pure state machine: results go in with the time they were taken,
 * the new state and any transition come out. Failures during the start period do not count
 * (a success ends the start period early); `retries` consecutive failures make it unhealthy.
 */
export type HealthStatus = 'starting' | 'healthy' | 'unhealthy';

export interface HealthState {
  status: HealthStatus;
  /** Consecutive failures counted so far. */
  failures: number;
  /** When the vserver (re)started, in ms: the start period runs from here. */
  startedAt: number;
  /** The last detail of a failure, for the event's reason. */
  lastError?: string;
}

export interface HealthParams {
  retries: number;
  startPeriodMs: number;
}

export interface HealthTransition {
  from: HealthStatus;
  to: HealthStatus;
  reason: string;
}

/**
 * When to probe next: every `start_interval` while the check has not passed yet and the start period
 * runs (a failure there does not count, so probing often only finds "up" sooner), else every `interval`.
 */
export function nextProbeAt(
  state: HealthState,
  at: number,
  check: { interval: number; start_period: number; start_interval?: number | undefined },
): number {
  const starting = state.status === 'starting' && at - state.startedAt < check.start_period;
  return at + (starting ? (check.start_interval ?? check.interval) : check.interval);
}

export function initialHealth(now: number): HealthState {
  return { status: 'starting', failures: 0, startedAt: now };
}

export function applyResult(
  state: HealthState,
  params: HealthParams,
  result: { ok: boolean; at: number; detail: string },
): { state: HealthState; transition?: HealthTransition } {
  if (result.ok) {
    const next: HealthState = { status: 'healthy', failures: 0, startedAt: state.startedAt };
    return state.status === 'healthy'
      ? { state: next }
      : { state: next, transition: { from: state.status, to: 'healthy', reason: result.detail } };
  }
  const inStartPeriod = state.status === 'starting' && result.at - state.startedAt < params.startPeriodMs;
  const failures = inStartPeriod ? 0 : state.failures + 1;
  if (failures >= params.retries && state.status !== 'unhealthy') {
    return {
      state: { ...state, status: 'unhealthy', failures, lastError: result.detail },
      transition: {
        from: state.status,
        to: 'unhealthy',
        reason: `${failures} consecutive failures, last: ${result.detail}`,
      },
    };
  }
  return { state: { ...state, failures, lastError: result.detail } };
}
