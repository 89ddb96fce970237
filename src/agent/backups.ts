/**
 * Scheduled backups, the agent's shell around the pure decision (src/backup/schedule.ts): every round,
 * for each job (a vserver's backup, the cluster's state, the retention), is a run due here now? If so,
 * the run is claimed in etcd (a transaction over the record read: one run per due time, cluster-wide),
 * then done by a child process (`cvserver backup run|cluster|prune --json`, this node's state dir, the
 * applied cluster.yaml): a backup takes minutes and the agent's loops must never wait for it. Its
 * outcome goes back into the job's record (`backups/<job>`) and, when it failed, into the cluster's log
 * with restic's error.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  backupDue,
  backupLate,
  backupNowDue,
  managerJobPlace,
  vserverBackupPlace,
} from '../backup/schedule.ts';
import type { ClusterSpec } from '../cluster/config.ts';
import type { NodeLocal } from '../cluster/node.ts';
import { periodMs } from '../lib/cron.ts';
import { errorMessage } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { formatSize } from '../lib/size.ts';
import { type BackupRecord, type BackupRun, RECORD_VERSION } from './records.ts';
import type { BackupNowRequest, ClusterStore, Snapshot } from './store.ts';

const CVSERVER = join(import.meta.dirname, '..', '..', 'bin', 'cvserver');
/** The jobs that are not a vserver's (a vserver name never starts with `@`). */
export const CLUSTER_JOB = '@cluster';
export const PRUNE_JOB = '@prune';
/** How long a finished run's record is retried when etcd does not take it. */
const WRITE_RETRY_MS = 5 * 60_000;

export interface BackupHost {
  node: string;
  stateDir: string;
  /** The applied cluster.yaml as the agent keeps it (the child reads the same configuration). */
  configFile: string;
  store: () => ClusterStore;
  event: (text: string) => void;
  log: Logger;
}

export interface BackupTick {
  spec: ClusterSpec;
  snapshot: Snapshot | undefined;
  local: NodeLocal;
  lease: string | null;
  isManager: boolean;
  timeoutMs: number;
}

/** A job as this node sees it this round (pure: from the spec and what was read). */
export interface JobPlan {
  job: string;
  schedule: string;
  notHere: string;
  args: string[];
  /** Jobs this one waits for (the prune locks the repository). */
  exclusive: string[];
}

export function planJobs(t: BackupTick, node: string): JobPlan[] {
  const b = t.spec.backup;
  if (!b) return [];
  const snap = t.snapshot;
  const manager = managerJobPlace({ isManager: t.isManager && t.lease !== null, fenced: t.local.fenced });
  const jobs: JobPlan[] = [];
  for (const [v, vb] of Object.entries(t.spec.backups)) {
    if (!t.spec.vservers[v] || snap?.config?.retired[v]) continue;
    jobs.push({
      job: v,
      schedule: vb.schedule,
      notHere: vserverBackupPlace({
        node,
        assignedTo: t.local.table?.[v]?.node,
        status: t.local.vservers[v]?.status,
        fenced: t.local.fenced,
        hasLease: t.lease !== null,
      }),
      args: ['backup', 'run', v, '--json'],
      exclusive: [PRUNE_JOB],
    });
  }
  if (b.cluster_schedule)
    jobs.push({
      job: CLUSTER_JOB,
      schedule: b.cluster_schedule,
      notHere: manager,
      args: ['backup', 'cluster', '--node', node, '--json'],
      exclusive: [PRUNE_JOB],
    });
  jobs.push({
    job: PRUNE_JOB,
    schedule: b.prune_schedule,
    notHere: manager,
    args: ['backup', 'prune', '--json'],
    exclusive: jobs.map((j) => j.job),
  });
  return jobs;
}

/** What a child's `--json` answer says about the run, for the record. */
function resultFields(job: string, stdout: string): Partial<BackupRun> {
  try {
    const r = JSON.parse(stdout) as Record<string, unknown>;
    const num = (k: string) => (typeof r[k] === 'number' ? (r[k] as number) : undefined);
    return {
      seconds: num('seconds'),
      bytesAdded: num('bytesAdded'),
      bytesProcessed: num('bytesProcessed'),
      snapshotId: typeof r.snapshotId === 'string' ? r.snapshotId : undefined,
      frozenMs: num('frozenMs'),
    };
  } catch {
    return job.startsWith('@') ? {} : { error: 'the backup printed no result' };
  }
}

function describe(job: string): string {
  return job === CLUSTER_JOB ? "the cluster's state" : job === PRUNE_JOB ? 'retention (forget --prune)' : job;
}

export class BackupScheduler {
  readonly #h: BackupHost;
  /** Jobs this agent runs now (claimed, running, or its outcome not stored yet). */
  readonly #busy = new Set<string>();
  readonly #children = new Set<ChildProcess>();
  /** Why each job does not run here, as last logged (logged when it changes). */
  readonly #why = new Map<string, string>();

  constructor(h: BackupHost) {
    this.#h = h;
  }

  #pidFile(job: string): string {
    return join(this.#h.stateDir, 'backup', 'jobs', `${job}.pid`);
  }

  /** A run left by an earlier agent of this node (it outlives the agent) still going. */
  #orphanRunning(job: string): boolean {
    try {
      const pid = Number(readFileSync(this.#pidFile(job), 'utf8'));
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('backup');
    } catch {
      return false;
    }
  }

  /** Called every round, after the read: starts what is due here (never waits for a run). */
  tick(t: BackupTick): void {
    const snap = t.snapshot;
    if (!snap?.config) return;
    const alive = new Set(Object.keys(snap.nodes));
    for (const j of planJobs(t, this.#h.node)) {
      const record = snap.backups[j.job];
      const runningHere = this.#busy.has(j.job) || this.#orphanRunning(j.job);
      const exclusive = j.exclusive.map((x) => snap.backups[x]);
      // An operator's "back up now" first (vserver jobs only); else the schedule.
      const request = j.job.startsWith('@') ? undefined : snap.backupNow[j.job];
      const now = backupNowDue({
        request,
        now: Date.now(),
        record,
        node: this.#h.node,
        notHere: j.notHere,
        runningHere,
        alive,
        exclusive,
      });
      const d = now.run
        ? now
        : backupDue({
            schedule: j.schedule,
            now: Date.now(),
            record,
            since: snap.config.appliedAt,
            node: this.#h.node,
            notHere: j.notHere,
            runningHere,
            alive,
            exclusive,
          });
      if (this.#why.get(j.job) !== d.why) {
        this.#why.set(j.job, d.why);
        this.#h.log.debug({ event: 'backup', job: j.job, run: d.run }, d.why);
      }
      if (!d.run) continue;
      this.#busy.add(j.job);
      void this.#run(j, d.dueAt, d.failures, record, t.timeoutMs, now.run ? request : undefined)
        .catch((err: unknown) => this.#h.log.error({ job: j.job, err: errorMessage(err) }, 'backup job'))
        .finally(() => this.#busy.delete(j.job));
    }
  }

  async #run(
    j: JobPlan,
    dueAt: number,
    failures: number,
    prev: (BackupRecord & { modRevision: number }) | undefined,
    timeoutMs: number,
    request?: BackupNowRequest,
  ): Promise<void> {
    const attempt: BackupRun = { node: this.#h.node, dueAt, startedAt: Date.now(), failures };
    const claim: BackupRecord = {
      version: RECORD_VERSION,
      job: j.job,
      attempt,
      ...(prev?.lastSuccess ? { lastSuccess: prev.lastSuccess } : {}),
    };
    const store = this.#h.store();
    // A request is consumed with the claim: answered once, by this run.
    const rev = await store
      .putBackup(claim, prev?.modRevision ?? 0, timeoutMs, request)
      .catch(() => undefined);
    if (rev === undefined) return; // another node claimed it, or etcd is away: the next round decides again
    const due = new Date(dueAt).toISOString();
    const why = request ? `requested by ${request.by}` : `scheduled for ${due}`;
    if (request) this.#h.event(`${describe(j.job)}: backup started (${why})`);
    this.#h.log.info({ event: 'backup', job: j.job, due }, `${describe(j.job)}: backup started`);
    const out = await this.#child(j);
    const fields = out.code === 0 ? resultFields(j.job, out.stdout) : {};
    const error = out.code === 0 ? fields.error : out.error;
    const finished: BackupRun = {
      ...attempt,
      ...fields,
      finishedAt: Date.now(),
      ok: error === undefined,
      ...(error === undefined ? {} : { error }),
    };
    if (finished.ok) {
      const what =
        j.job === PRUNE_JOB
          ? 'retention applied (forget --prune)'
          : `backup ${finished.snapshotId?.slice(0, 8) ?? '?'}: ${formatSize(finished.bytesAdded ?? 0)} added in ${finished.seconds ?? '?'} s`;
      this.#h.event(`${describe(j.job)}: ${what} (${why})`);
    } else
      this.#h.event(
        request
          ? `${describe(j.job)}: backup ${why} failed: ${error ?? 'unknown error'}`
          : `${describe(j.job)}: scheduled backup for ${due} failed (run ${failures + 1}): ${error ?? 'unknown error'}`,
      );
    const done: BackupRecord = {
      version: RECORD_VERSION,
      job: j.job,
      attempt: finished,
      ...(finished.ok
        ? { lastSuccess: finished }
        : prev?.lastSuccess
          ? { lastSuccess: prev.lastSuccess }
          : {}),
    };
    // Written over the claim only: a record another node has written since (it took over) stays.
    const until = Date.now() + WRITE_RETRY_MS;
    for (;;) {
      try {
        if ((await store.putBackup(done, rev, timeoutMs)) === undefined)
          this.#h.log.warn({ job: j.job }, 'backup record changed meanwhile: outcome not stored');
        return;
      } catch (err) {
        if (Date.now() > until) {
          this.#h.log.error({ job: j.job, err: errorMessage(err) }, 'backup outcome not stored');
          return;
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  /** The run, as `cvserver ...` of this node: its exit code, stdout, and the error it printed. */
  #child(j: JobPlan): Promise<{ code: number; stdout: string; error: string }> {
    const pidFile = this.#pidFile(j.job);
    mkdirSync(join(this.#h.stateDir, 'backup', 'jobs'), { recursive: true });
    return new Promise((resolve) => {
      const child = spawn(CVSERVER, [...j.args, '--config', this.#h.configFile], {
        // Its own session: a signal to the agent's group (Ctrl-C) does not cut a backup half-way.
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, CVSERVER_STATE_DIR: this.#h.stateDir },
      });
      this.#children.add(child);
      if (child.pid) writeFileSync(pidFile, String(child.pid));
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8000)));
      const end = (code: number, why?: string) => {
        this.#children.delete(child);
        rmSync(pidFile, { force: true });
        const last = stderr
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean)
          .pop();
        resolve({ code, stdout, error: (why ?? last ?? `exit ${code}`).replace(/^cvserver: /, '') });
      };
      child.on('error', (err) => end(-1, `cannot run ${CVSERVER}: ${err.message}`));
      child.on('close', (code, signal) => end(code ?? -1, signal ? `killed by ${signal}` : undefined));
    });
  }

  /** Runs in progress are left to finish (they release their snapshot); a new agent waits for them. */
  close(): void {
    for (const c of this.#children) {
      c.stdout?.destroy();
      c.stderr?.destroy();
      c.unref();
    }
  }
}

/** What `cvserver status` shows of a backup job. */
export interface BackupStatus {
  schedule: string;
  /** The last successful run: when it ended (ms), what it added, how long it took, where. */
  lastSuccess: {
    at: number;
    bytesAdded: number | null;
    seconds: number | null;
    snapshotId: string;
    node: string;
  } | null;
  /** The last run's error when it failed, else null. */
  lastError: string | null;
  /** A run in progress: on which node, since when (ms). */
  running: { node: string; since: number } | null;
  /** The last success is older than twice the schedule's period (or none for that long). */
  late: boolean;
}

export function backupStatusOf(
  schedule: string,
  record: BackupRecord | undefined,
  since: number,
  now: number,
): BackupStatus {
  const s = record?.lastSuccess;
  const a = record?.attempt;
  return {
    schedule,
    lastSuccess: s
      ? {
          at: s.finishedAt ?? s.startedAt,
          bytesAdded: s.bytesAdded ?? null,
          seconds: s.seconds ?? null,
          snapshotId: s.snapshotId ?? '',
          node: s.node,
        }
      : null,
    lastError: a?.ok === false ? (a.error ?? 'failed') : null,
    running: a && a.finishedAt === undefined ? { node: a.node, since: a.startedAt } : null,
    late: backupLate({
      lastSuccessAt: s ? (s.finishedAt ?? s.startedAt) : undefined,
      since,
      periodMs: periodMs(schedule, new Date(now)),
      now,
    }),
  };
}
