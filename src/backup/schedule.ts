/**
 * When a scheduled backup job runs, and where (pure; the agent's shell is src/agent/backups.ts).
 * Like a persistent systemd timer: a job runs once for the schedule's latest time that its record in
 * etcd does not cover yet, so a time missed while the cluster was down (or while the vserver ran
 * nowhere) is run once when it can, and a time already run elsewhere (before a failover) is not run
 * again. Jobs: a vserver's backup (on the node that runs it), the cluster's state and the retention
 * (on the manager).
 */
import type { BackupRecord } from '../agent/records.ts';
import { lastRun } from '../lib/cron.ts';

/** A failed run is tried again after this long, for the same due time, up to MAX_FAILURES runs. */
export const RETRY_AFTER_MS = 60_000;
export const MAX_FAILURES = 3;
/** A run in progress on another live node is waited for this long, then taken for lost. */
export const STALE_RUN_MS = 6 * 3600_000;

export interface DueInput {
  schedule: string;
  now: number;
  record: BackupRecord | undefined;
  /** Where the schedule starts counting for a job that never ran (ms): when the configuration was applied. */
  since: number;
  node: string;
  /** Why this node may not run the job now; '' when it may. */
  notHere: string;
  /** This node is running the job right now. */
  runningHere: boolean;
  /** Nodes whose lease is alive. */
  alive: ReadonlySet<string>;
  /** Jobs that lock the repository exclusively (the prune) or must not overlap with this one. */
  exclusive?: readonly (BackupRecord | undefined)[];
}

export type DueDecision =
  | { run: true; dueAt: number; failures: number; why: string }
  | { run: false; why: string };

const iso = (ms: number) => new Date(ms).toISOString();

/** A run that has started and not ended, on a node that still lives, not for ages. */
function inProgress(
  r: BackupRecord | undefined,
  now: number,
  alive: ReadonlySet<string>,
): string | undefined {
  const a = r?.attempt;
  if (!a || a.finishedAt !== undefined || !alive.has(a.node) || now - a.startedAt >= STALE_RUN_MS)
    return undefined;
  return a.node;
}

export function backupDue(i: DueInput): DueDecision {
  if (i.runningHere) return { run: false, why: 'running here' };
  if (i.notHere) return { run: false, why: i.notHere };
  const a = i.record?.attempt;
  const other = a && a.node !== i.node ? inProgress(i.record, i.now, i.alive) : undefined;
  if (other) return { run: false, why: `running on ${other} since ${iso(a!.startedAt)}` };
  for (const x of i.exclusive ?? []) {
    const on = inProgress(x, i.now, i.alive);
    if (on) return { run: false, why: `waiting for ${x!.job} on ${on}` };
  }
  // A run that never ended (its node died, or this agent restarted under it) is a failure.
  const abandoned = a !== undefined && a.finishedAt === undefined;
  const failed = a !== undefined && (abandoned || a.ok === false);
  const failures = failed ? (a.failures ?? 0) + 1 : 0;
  // What is done: the last success, and a run that ended (a failure counts once its retries are spent).
  const covered = Math.max(
    i.record?.lastSuccess?.dueAt ?? Number.NEGATIVE_INFINITY,
    a && !failed ? a.dueAt : Number.NEGATIVE_INFINITY,
    a && failed && failures >= MAX_FAILURES ? a.dueAt : Number.NEGATIVE_INFINITY,
  );
  const from = Number.isFinite(covered) ? covered : i.since;
  const due = lastRun(i.schedule, new Date(i.now))?.getTime();
  if (due !== undefined && due > from) {
    // The same due time as the failed run: a retry, after a pause.
    if (failed && a.dueAt === due) {
      const ended = a.finishedAt ?? a.startedAt;
      if (!abandoned && i.now - ended < RETRY_AFTER_MS)
        return { run: false, why: `retry of ${iso(due)} after ${iso(ended + RETRY_AFTER_MS)}` };
      return { run: true, dueAt: due, failures, why: `retry ${failures + 1} of ${iso(due)}` };
    }
    return { run: true, dueAt: due, failures: 0, why: `due at ${iso(due)}` };
  }
  return { run: false, why: `done for ${iso(from)}` };
}

/** Why this node may not run a vserver's backup now ('' when it may): it must run the vserver, assigned here. */
export function vserverBackupPlace(o: {
  node: string;
  assignedTo: string | undefined;
  status: string | undefined;
  fenced: boolean;
  hasLease: boolean;
}): string {
  if (o.assignedTo !== o.node) return o.assignedTo ? `runs on ${o.assignedTo}` : 'assigned nowhere';
  if (o.fenced || !o.hasLease) return 'this node has no valid lease';
  if (o.status !== 'healthy' && o.status !== 'running') return `not running here (${o.status ?? 'absent'})`;
  return '';
}

/** Why this node may not run a cluster-wide job ('' when it may): the manager runs them. */
export function managerJobPlace(o: { isManager: boolean; fenced: boolean }): string {
  if (!o.isManager) return 'not the manager';
  return o.fenced ? 'this node is fenced' : '';
}

/** A vserver's last success is late when older than twice its schedule's period (status flags it). */
export function backupLate(o: {
  lastSuccessAt: number | undefined;
  since: number;
  periodMs: number | undefined;
  now: number;
}): boolean {
  if (o.periodMs === undefined) return false;
  return o.now - (o.lastSuccessAt ?? o.since) > 2 * o.periodMs;
}

/**
 * An operator's "back up now" (`backup-now/<vserver>`, who and when): run here at once when this node
 * may run the vserver's backup and no run of it (or of the prune) is in progress. The run is recorded
 * for the request's time, so the schedule's next time after it runs as usual.
 */
export function backupNowDue(
  i: Omit<DueInput, 'schedule' | 'now' | 'since'> & {
    request: { at: number; by: string } | undefined;
    now: number;
  },
): DueDecision {
  if (!i.request) return { run: false, why: 'not requested' };
  if (i.runningHere) return { run: false, why: 'running here' };
  if (i.notHere) return { run: false, why: i.notHere };
  const other = inProgress(i.record, i.now, i.alive);
  if (other) return { run: false, why: `running on ${other}` };
  for (const x of i.exclusive ?? []) {
    const on = inProgress(x, i.now, i.alive);
    if (on) return { run: false, why: `waiting for ${x!.job} on ${on}` };
  }
  return { run: true, dueAt: i.request.at, failures: 0, why: `requested by ${i.request.by}` };
}
