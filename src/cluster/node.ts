/**
 * The node's side of the cluster as a pure step: from what the node remembers, what happened since the
 * last round (lease renewals, the assignment table, its vservers' progress) and the time, to what it
 * must do now. The agent (and the simulator) carry out the actions and feed their outcome back as events.
 *
 * Safety rests on one rule: a node runs vservers only while `now < leaseUntil - fenceMargin`, where
 * `leaseUntil` is the send time of the last acknowledged renewal plus the TTL, on the node's own clock.
 * The store's lease cannot end before that, so the manager, which moves a vserver only once the lease
 * has ended, never sees two copies.
 */
import type { AssignmentTable } from './assignments.ts';
import type { Report, RunStatus } from './types.ts';

export interface NodeTiming {
  leaseTtl: number;
  fenceMargin: number;
}

export interface LocalVserver {
  status: RunStatus;
  /** When the status last changed (reported: the manager handles a failure once per `since`). */
  since: number;
  epoch: number;
  /** The table's restart count this copy was started for. */
  restarts: number;
  /** A stop failed: it is tried again at this time (the vserver stays stopping until one succeeds). */
  stopRetryAt?: number;
}

/** Seconds between tries of a stop that failed (each try already waited for its own timeouts). */
export const STOP_RETRY_S = 1;

export interface NodeLocal {
  name: string;
  /** Send time of the latest acknowledged renewal + TTL; null: no lease (fresh start or lost). */
  leaseUntil: number | null;
  fenced: boolean;
  /** When it fenced: only a renewal sent after this ends the fence. */
  fencedAt: number | null;
  vservers: Record<string, LocalVserver>;
  /** The assignment table as last read from the store (null: never read). */
  table: AssignmentTable | null;
}

export type NodeEvent =
  | { kind: 'renewed'; sentAt: number }
  | { kind: 'lease-lost'; reason: string }
  | { kind: 'assignments'; table: AssignmentTable }
  | { kind: 'started'; vserver: string; epoch: number }
  | { kind: 'start-failed'; vserver: string; error: string }
  | { kind: 'stopped'; vserver: string }
  /** The stop ran and failed: its volume may still be primary, so it is not done. */
  | { kind: 'stop-failed'; vserver: string; error: string }
  | { kind: 'health'; vserver: string; healthy: boolean }
  | { kind: 'crashed'; vserver: string; reason: string };

export type NodeAction =
  | { kind: 'start'; vserver: string; epoch: number; reason: string }
  | { kind: 'restart'; vserver: string; epoch: number; reason: string }
  | { kind: 'stop'; vserver: string; hard: boolean; reason: string };

export interface NodeStepResult {
  local: NodeLocal;
  actions: NodeAction[];
  /** Decisions and status changes, each with its reason, once. */
  log: string[];
  /** What the node publishes: status per vserver it holds. */
  reports: Record<string, Report>;
}

/** Statuses in which resources of the vserver may be up (a failed one is not stopped yet). */
const ACTIVE = new Set<RunStatus>(['starting', 'running', 'healthy', 'failed', 'stopping']);

export function isActive(status: RunStatus | undefined): boolean {
  return status !== undefined && ACTIVE.has(status);
}

export function emptyLocal(name: string): NodeLocal {
  return { name, leaseUntil: null, fenced: false, fencedAt: null, vservers: {}, table: null };
}

/**
 * What an agent knows after it (or its machine) restarted at `now`: the vservers it held (their volumes
 * carry their epochs), all stopped, and no lease. It reports them stopped, so the manager places them again.
 */
export function afterRestart(local: NodeLocal, now: number): NodeLocal {
  const vservers: Record<string, LocalVserver> = {};
  for (const [v, l] of Object.entries(local.vservers)) vservers[v] = { ...l, status: 'stopped', since: now };
  return { ...local, leaseUntil: null, fenced: false, fencedAt: null, vservers };
}

function fmt(t: number): string {
  return t.toFixed(1);
}

/** One round of the node. Pure and deterministic: `local` is not modified. */
export function nodeStep(
  local: NodeLocal,
  events: NodeEvent[],
  now: number,
  timing: NodeTiming,
): NodeStepResult {
  const l: NodeLocal = { ...local, vservers: {} };
  for (const [v, x] of Object.entries(local.vservers)) l.vservers[v] = { ...x };
  const actions: NodeAction[] = [];
  const log: string[] = [];
  const set = (v: string, status: RunStatus) => {
    const x = l.vservers[v]!;
    x.status = status;
    x.since = now;
    delete x.stopRetryAt;
  };
  const mine = (v: string) => {
    const a = l.table?.[v];
    return a && a.node === l.name ? a : undefined;
  };
  const fence = (why: string) => {
    const active = Object.keys(l.vservers)
      .filter((v) => isActive(l.vservers[v]!.status))
      .sort();
    l.fenced = true;
    l.fencedAt = now;
    log.push(`fence: ${why}: ${active.length ? `stopping ${active.join(', ')} hard` : 'nothing running'}`);
    for (const v of active) {
      set(v, 'stopping');
      actions.push({ kind: 'stop', vserver: v, hard: true, reason: `fenced: ${why}` });
    }
  };

  for (const e of events) {
    switch (e.kind) {
      case 'renewed': {
        const until = e.sentAt + timing.leaseTtl;
        if (l.leaseUntil === null || until > l.leaseUntil) l.leaseUntil = until;
        if (l.fenced && l.fencedAt !== null && e.sentAt > l.fencedAt) {
          l.fenced = false;
          l.fencedAt = null;
          log.push(
            `unfence: renewal sent at ${fmt(e.sentAt)} acknowledged (lease valid until ${fmt(l.leaseUntil)}): assignments apply again`,
          );
        }
        break;
      }
      case 'lease-lost':
        l.leaseUntil = null;
        if (l.fenced) log.push(`lease lost: ${e.reason} (fenced since ${fmt(l.fencedAt ?? now)})`);
        else fence(`lease lost: ${e.reason}`);
        break;
      case 'assignments':
        l.table = e.table;
        break;
      case 'started': {
        const x = l.vservers[e.vserver];
        if (x?.status === 'starting' && x.epoch === e.epoch) {
          set(e.vserver, 'running');
          log.push(`${e.vserver}: running with epoch ${e.epoch}`);
        }
        break;
      }
      case 'start-failed': {
        const x = l.vservers[e.vserver];
        if (x?.status === 'starting') {
          set(e.vserver, 'failed');
          log.push(`${e.vserver}: start failed: ${e.error} (reported failed; the manager decides)`);
        }
        break;
      }
      case 'stopped': {
        const x = l.vservers[e.vserver];
        if (!x || x.status === 'stopped') break;
        if (mine(e.vserver)?.epoch === x.epoch) {
          // Stopped while still assigned here (fenced): reported stopped, so the manager places it again.
          set(e.vserver, 'stopped');
          log.push(`${e.vserver}: stopped (still assigned here: reported stopped)`);
        } else {
          delete l.vservers[e.vserver];
          log.push(`${e.vserver}: stopped`);
        }
        break;
      }
      case 'stop-failed': {
        const x = l.vservers[e.vserver];
        if (x?.status !== 'stopping') break;
        x.stopRetryAt = now + STOP_RETRY_S;
        log.push(`${e.vserver}: stop failed: ${e.error} (stays stopping; tried again in ${STOP_RETRY_S} s)`);
        break;
      }
      case 'health': {
        const x = l.vservers[e.vserver];
        if (!x) break;
        if (e.healthy && x.status === 'running') {
          set(e.vserver, 'healthy');
          log.push(`${e.vserver}: healthy`);
        } else if (!e.healthy && (x.status === 'running' || x.status === 'healthy')) {
          set(e.vserver, 'failed');
          log.push(`${e.vserver}: health check failed (reported failed; the manager decides)`);
        }
        break;
      }
      case 'crashed': {
        const x = l.vservers[e.vserver];
        if (!x) break;
        if (x.status === 'stopping') {
          // Killed by the guard (container and volume daemon): its processes are gone, the stop is
          // complete. Not after a failed stop, which may have left the volume primary: its retry
          // finishes the job (a stop of a vanished container only releases the volume).
          if (x.stopRetryAt === undefined) {
            set(e.vserver, 'stopped');
            log.push(`${e.vserver}: stopped (${e.reason})`);
          }
        } else if (x.status === 'starting' || x.status === 'running' || x.status === 'healthy') {
          set(e.vserver, 'failed');
          log.push(`${e.vserver}: crashed: ${e.reason} (reported failed; the manager decides)`);
        }
        break;
      }
    }
  }

  // Fence before the lease can end: the store may expire it at leaseUntil at the earliest.
  const hasActive = Object.values(l.vservers).some((x) => isActive(x.status) && x.status !== 'stopping');
  if (!l.fenced) {
    if (l.leaseUntil !== null && now >= l.leaseUntil - timing.fenceMargin)
      fence(
        `no renewal acknowledged since ${fmt(l.leaseUntil - timing.leaseTtl)} (lease valid until ${fmt(l.leaseUntil)} at the latest)`,
      );
    else if (l.leaseUntil === null && hasActive) fence('no lease');
  }
  const canRun = !l.fenced && l.leaseUntil !== null && now < l.leaseUntil - timing.fenceMargin;

  // What it holds against the table.
  for (const v of Object.keys(l.vservers).sort()) {
    const x = l.vservers[v]!;
    const a = mine(v);
    const other = l.table?.[v];
    const where = other ? `now on ${other.node}` : 'removed from the table';
    if (x.status === 'stopping') {
      // Never start again before the stop completed; a stop that failed is tried again.
      if (x.stopRetryAt !== undefined && now >= x.stopRetryAt) {
        delete x.stopRetryAt;
        const reason = `retrying a stop that failed (${a ? 'still assigned here' : where})`;
        actions.push({ kind: 'stop', vserver: v, hard: l.fenced, reason });
        log.push(`${v}: stop: ${reason}`);
      }
      continue;
    }
    if (x.status === 'stopped') {
      if (!a) {
        delete l.vservers[v];
        log.push(`${v}: forgotten: not assigned to this node any more (${where})`);
      } else if (canRun && (a.epoch > x.epoch || a.restarts > x.restarts)) {
        const reason = a.epoch > x.epoch ? 'assigned' : `restart ${a.restarts} requested`;
        Object.assign(x, { epoch: a.epoch, restarts: a.restarts });
        set(v, 'starting');
        actions.push({ kind: 'start', vserver: v, epoch: a.epoch, reason });
        log.push(`${v}: start with epoch ${a.epoch} (${reason})`);
      }
      continue;
    }
    if (!a) {
      set(v, 'stopping');
      const reason = `not assigned to this node any more (${where})`;
      actions.push({ kind: 'stop', vserver: v, hard: false, reason });
      log.push(`${v}: stop: ${reason}`);
    } else if (canRun && (a.epoch > x.epoch || a.restarts > x.restarts)) {
      const reason =
        a.epoch > x.epoch ? `assigned again with epoch ${a.epoch}` : `restart ${a.restarts} requested`;
      Object.assign(x, { epoch: a.epoch, restarts: a.restarts });
      set(v, 'starting');
      actions.push({ kind: 'restart', vserver: v, epoch: a.epoch, reason });
      log.push(`${v}: restart with epoch ${a.epoch} (${reason})`);
    }
  }
  // What the table gives it that it does not hold yet.
  if (canRun && l.table)
    for (const v of Object.keys(l.table).sort()) {
      const a = l.table[v]!;
      if (a.node !== l.name || l.vservers[v]) continue;
      l.vservers[v] = { status: 'starting', since: now, epoch: a.epoch, restarts: a.restarts };
      actions.push({ kind: 'start', vserver: v, epoch: a.epoch, reason: 'assigned' });
      log.push(`${v}: start with epoch ${a.epoch} (assigned)`);
    }

  const reports: Record<string, Report> = {};
  for (const [v, x] of Object.entries(l.vservers))
    reports[v] = { status: x.status, since: x.since, epoch: x.epoch };
  return { local: l, actions, log, reports };
}
