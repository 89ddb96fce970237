/**
 * Time, as every part of cvserver that reads it sees it: the system's in production, a simulated one in
 * tests and in the deterministic simulations (where time moves only when the simulator says so).
 */

/** A timer that can be cancelled; cancelling one that already fired does nothing. */
export interface TimerHandle {
  cancel(): void;
  /** Where time is real: the pending timer alone does not keep the process running. */
  unref?(): void;
}

export interface Clock {
  /**
   * Milliseconds: since the epoch on systemClock, since boot on monotonicClock, from where it is told on
   * the simulated one. Compare only readings of one clock.
   */
  now(): number;
  /** Run `fn` once, `ms` from now. */
  setTimer(fn: () => void, ms: number): TimerHandle;
  /** Resolve `ms` from now. */
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const t = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(t), unref: () => t.unref() };
  },
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/**
 * Milliseconds from `now` to the next multiple of `period`: timers of several processes on this grid
 * (one clock, or wall clocks kept in step) fire together. A multiple less than a quarter period away is
 * skipped, so a timer that fired a little early does not fire again at once (at most 1.25 periods).
 */
export function delayToGrid(now: number, period: number): number {
  const d = period - (((now % period) + period) % period);
  return d < period / 4 ? d + period : d;
}

/** Milliseconds on CLOCK_MONOTONIC: comparable between processes of one boot, blind to wall-clock jumps. */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * The system's timers with CLOCK_MONOTONIC for `now` (libuv timers run on it too): what deadlines that
 * must not move with the wall clock are measured with (lease, fencing, the mesh's round trips).
 */
export const monotonicClock: Clock = { ...systemClock, now: monotonicMs };

interface PendingTimer {
  at: number;
  /** Order of creation: timers due at the same instant fire in the order they were set (deterministic). */
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * Simulated time: `advance` and `runNext` fire due timers in (time, creation) order. Nothing happens on its
 * own, so a run driven by a seeded generator replays exactly.
 */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  #timers: PendingTimer[] = [];

  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimer(fn: () => void, ms: number): TimerHandle {
    const timer: PendingTimer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimer(resolve, ms));
  }

  /** When the next live timer is due, or undefined when none is pending. */
  nextDue(): number | undefined {
    return this.#earliest()?.at;
  }

  /** Move time to the next due timer and fire it; false when none is pending. */
  runNext(): boolean {
    const timer = this.#earliest();
    if (!timer) return false;
    this.#timers.splice(this.#timers.indexOf(timer), 1);
    this.#now = Math.max(this.#now, timer.at);
    timer.fn();
    return true;
  }

  /** Fire every timer due within `ms`, in order, then leave time at now + ms. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (let t = this.#earliest(); t && t.at <= until; t = this.#earliest()) this.runNext();
    this.#now = until;
  }

  #earliest(): PendingTimer | undefined {
    this.#timers = this.#timers.filter((t) => !t.cancelled);
    let best: PendingTimer | undefined;
    for (const t of this.#timers)
      if (!best || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t;
    return best;
  }
}
