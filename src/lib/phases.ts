/**
 * Where a long operation's time went: `mark(name)` closes the phase that ran since the previous mark.
 * The result goes into the operation's final log line, so a slow start or stop shows which step was slow.
 */
export interface Phases {
  mark(phase: string): void;
  /** Milliseconds per phase, in order, and `total`. */
  readonly ms: Record<string, number>;
}

export function phases(now: () => number = () => performance.now()): Phases {
  const began = now();
  let last = began;
  const ms: Record<string, number> = {};
  return {
    mark(phase) {
      const t = now();
      ms[phase] = Math.round((ms[phase] ?? 0) + t - last);
      ms.total = Math.round(t - began);
      last = t;
    },
    ms,
  };
}
