/**
 * Cron expressions (backup schedules): the one place that parses them, with croner (see
 * docs/backup.md for why that library). Five fields (minute hour day month weekday) or six (with
 * seconds first), in the node's local time.
 */
import { Cron } from 'croner';

/** Why `expr` is not a cron expression, or undefined when it is one. */
export function cronError(expr: string): string | undefined {
  try {
    new Cron(expr, { paused: true });
    return undefined;
  } catch (err) {
    return `"${expr}" is not a cron expression (${(err as Error).message}); expected e.g. "0 2 * * *" (02:00 daily)`;
  }
}

/** The first time the schedule fires strictly after `after`, or undefined if it never does again. */
export function nextRun(expr: string, after: Date): Date | undefined {
  return new Cron(expr, { paused: true }).nextRun(after) ?? undefined;
}

/** The schedule's period around `at`: the gap between its next two runs, in ms (status flags a late backup with it). */
export function periodMs(expr: string, at: Date): number | undefined {
  const first = nextRun(expr, at);
  const second = first && nextRun(expr, first);
  return first && second ? second.getTime() - first.getTime() : undefined;
}

/** The last time the schedule fired at or before `now` and after `since` (a run missed while down). */
export function missedRun(expr: string, since: Date, now: Date): Date | undefined {
  let last: Date | undefined;
  for (let t = nextRun(expr, since); t && t <= now; t = nextRun(expr, t)) last = t;
  return last;
}

/**
 * The schedule's latest time at or before `now` (croner's previousRuns is strictly before, at whole
 * seconds): the due time a persistent timer compares with the last run, without walking the schedule.
 */
export function lastRun(expr: string, now: Date): Date | undefined {
  const [a, b] = new Cron(expr, { paused: true }).previousRuns(2, new Date(now.getTime() + 1000));
  if (a && a <= now) return a;
  return b && b <= now ? b : undefined;
}
