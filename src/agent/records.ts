/**
 * What agents keep in etcd, under `/cvserver/<cluster>/`: the key layout and the records, each with a
 * format version so an agent of the next version can tell what it reads (and refuse what it does not know).
 *
 *   format              the stored format the cluster uses (format.ts; the one record without `version`)
 *   config              the applied cluster.yaml (text; every agent validates it again)
 *   nodes/<node>        the node is alive (attached to its lease)
 *   reports/<node>      what the node runs and the state of its replicas (attached to its lease)
 *   manager             the elected manager (attached to its lease)
 *   state               the manager's state and the assignment table (written only by the manager)
 *   requests/<id>       operator requests (migrate, clear), consumed by the manager
 *   standby/<node>      the node is in standby (its vservers move off), set by the operator
 *   maintenance         the manager observes and decides nothing, set by the operator
 *   initialized/<vs>    the vserver's volume has been promoted once: later replicas join with a full sync
 *   events/<ms>-<node>-<n>  the cluster's log
 *   backup-now/<vs>     an operator's "back up now" for a vserver (who, when), consumed by the node that
 *                       runs the vserver together with its claim of the run (src/agent/backups.ts)
 *   backups/<job>       scheduled backups (src/agent/backups.ts): a vserver's name, or `@cluster` (the
 *                       cluster's own state) and `@prune` (retention): the last attempt and last success
 *   tokens/<name>       an HTTP API token: its name, scope and SHA-256 (src/agent/http/tokens.ts)
 *
 * Compatibility: objects are parsed with zod's default, which drops keys it does not know, so a record
 * that a newer agent wrote with an extra optional field is read as before (and an older agent that
 * writes it again leaves that field out: a new field must be optional and a hint, or come with a new
 * format). A record of another `version` is set aside with a reason (store.ts).
 */
import { z } from 'zod';
import type { AssignmentTable } from '../cluster/assignments.ts';
import type { VserverSpec } from '../cluster/config.ts';
import type { ManagerState, OperatorEvent, Report } from '../cluster/types.ts';

/** The stored format this agent reads and writes. */
export const RECORD_VERSION = 1;

export function clusterPrefix(cluster: string): string {
  return `/cvserver/${cluster}/`;
}

export interface Keys {
  prefix: string;
  format: string;
  config: string;
  node(name: string): string;
  report(name: string): string;
  manager: string;
  state: string;
  request(id: string): string;
  standby(node: string): string;
  maintenance: string;
  initialized(vserver: string): string;
  event(atMs: number, node: string, seq: number): string;
  events: string;
  backup(job: string): string;
  backupNow(vserver: string): string;
}

export function keysFor(cluster: string): Keys {
  const p = clusterPrefix(cluster);
  return {
    prefix: p,
    format: `${p}format`,
    config: `${p}config`,
    node: (n) => `${p}nodes/${n}`,
    report: (n) => `${p}reports/${n}`,
    manager: `${p}manager`,
    state: `${p}state`,
    request: (id) => `${p}requests/${id}`,
    standby: (n) => `${p}standby/${n}`,
    maintenance: `${p}maintenance`,
    initialized: (v) => `${p}initialized/${v}`,
    event: (at, n, seq) => `${p}events/${String(at).padStart(15, '0')}-${n}-${String(seq).padStart(6, '0')}`,
    events: `${p}events/`,
    backup: (job) => `${p}backups/${job}`,
    backupNow: (v) => `${p}backup-now/${v}`,
  };
}

const version = z.literal(RECORD_VERSION);
const runStatus = z.enum(['starting', 'running', 'healthy', 'failed', 'stopping', 'stopped']);

export const configRecordSchema = z.object({
  version,
  yaml: z.string(),
  file: z.string(),
  appliedAt: z.number(),
  appliedBy: z.string(),
  /**
   * Vservers removed from cluster.yaml by an apply, as they were last defined: kept stopped with their
   * volumes (the data stays until it is destroyed), so the nodes still know how to stop them.
   */
  retired: z
    .record(
      z.string(),
      z.custom<VserverSpec>((v) => typeof v === 'object' && v !== null),
    )
    .default({}),
  /**
   * Nodes taken out by `cvserver node remove` (by whom, when): their entries stay in the yaml, but
   * nothing is placed on them, their replicas leave every volume's peers, and their agents stand down.
   */
  removed: z.record(z.string(), z.object({ at: z.number(), by: z.string() })).default({}),
});
export type ConfigRecord = z.infer<typeof configRecordSchema>;

const formatRange = z.object({ min: z.number().int().min(1), max: z.number().int().min(1) });

/**
 * The stored format the cluster uses (format.ts). Every agent of every release reads it, so its shape
 * never changes and it carries no `version`: it is what says the version.
 */
export const formatRecordSchema = z.object({
  format: z.number().int().min(1),
  at: z.number(),
  by: z.string(),
});
export type FormatRecord = z.infer<typeof formatRecordSchema>;

export const nodeRecordSchema = z.object({
  version,
  node: z.string(),
  agentVersion: z.string(),
  pid: z.number(),
  startedAt: z.number(),
  lease: z.string(),
  /** The stored formats this agent reads and writes; absent from agents of before the rule (1-1). */
  formats: formatRange.optional(),
});
export type NodeRecord = z.infer<typeof nodeRecordSchema>;

export const replicaReportSchema = z.object({
  role: z.enum(['primary', 'secondary', 'none']),
  diskState: z.string(),
  upToDate: z.boolean(),
  epoch: z.number(),
  failed: z.boolean(),
  // Optional hints for /metrics (docs/metrics.md): absent from agents of before them.
  outOfSyncBytes: z.number().optional(),
  resyncBytesPerSecond: z.number().optional(),
  suspendedWrites: z.number().optional(),
  splitBrain: z.boolean().optional(),
});
export type ReplicaReport = z.infer<typeof replicaReportSchema>;

export const vserverReportSchema = z.object({
  status: runStatus,
  /** Wall-clock seconds: the manager handles a failure once per `since`, whichever node it runs on. */
  since: z.number(),
  epoch: z.number(),
  health: z.string(),
});
export type VserverReport = z.infer<typeof vserverReportSchema>;

export const nodeReportSchema = z.object({
  version,
  node: z.string(),
  at: z.number(),
  fenced: z.boolean(),
  vservers: z.record(z.string(), vserverReportSchema),
  replicas: z.record(z.string(), replicaReportSchema),
});
export type NodeReport = z.infer<typeof nodeReportSchema>;

/** The manager's state and the assignment table: JSON the manager wrote itself, checked for shape. */
export const stateRecordSchema = z.object({
  version,
  manager: z.string(),
  at: z.number(),
  state: z.custom<ManagerState>(
    (v) => typeof v === 'object' && v !== null && 'vservers' in v && 'nodes' in v,
    'expected the manager state',
  ),
  table: z.record(
    z.string(),
    z.object({ node: z.string(), epoch: z.number(), restarts: z.number() }),
  ) as z.ZodType<AssignmentTable>,
});
export type StateRecord = z.infer<typeof stateRecordSchema>;

export const requestRecordSchema = z.object({
  version,
  at: z.number(),
  by: z.string(),
  event: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('migrate'), vserver: z.string(), node: z.string() }),
    z.object({ kind: z.literal('clear'), vserver: z.string() }),
  ]) as z.ZodType<OperatorEvent>,
});
export type RequestRecord = z.infer<typeof requestRecordSchema>;

export const eventRecordSchema = z.object({
  version,
  at: z.number(),
  node: z.string(),
  source: z.enum(['manager', 'node', 'agent', 'operator']),
  text: z.string(),
});
export type EventRecord = z.infer<typeof eventRecordSchema>;

/** A setting the operator turned on (standby of a node, maintenance): who, when. */
export const settingRecordSchema = z.object({
  version,
  at: z.number(),
  by: z.string(),
});
export type SettingRecord = z.infer<typeof settingRecordSchema>;

/** One run of a scheduled backup job (a vserver's backup, the cluster's state, the retention). */
export const backupRunSchema = z.object({
  node: z.string(),
  /** The schedule's time this run is for (ms): the next run is the schedule's first time after it. */
  dueAt: z.number(),
  startedAt: z.number(),
  /** Absent while it runs (or when the node running it died). */
  finishedAt: z.number().optional(),
  ok: z.boolean().optional(),
  error: z.string().optional(),
  /** Failed runs in a row for this due time (a failed run is tried again a few times). */
  failures: z.number().int().optional(),
  seconds: z.number().optional(),
  bytesAdded: z.number().optional(),
  bytesProcessed: z.number().optional(),
  snapshotId: z.string().optional(),
  frozenMs: z.number().optional(),
});
export type BackupRun = z.infer<typeof backupRunSchema>;

export const backupRecordSchema = z.object({
  version,
  job: z.string(),
  /** The run in progress, or the last one that ended. */
  attempt: backupRunSchema,
  lastSuccess: backupRunSchema.optional(),
});
export type BackupRecord = z.infer<typeof backupRecordSchema>;

/** A report as the manager reads it. */
export function toReport(r: VserverReport): Report {
  return { status: r.status, since: r.since, epoch: r.epoch };
}
