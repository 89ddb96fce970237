/**
 * The cluster's shared state in etcd, as the agent uses it: one read of everything per round (a
 * snapshot), and the few writes a node or the manager makes. Records are validated on the way in: a
 * malformed or foreign-version record is set aside with a reason (and shown by `status`), never trusted.
 */
import type { z } from 'zod';
import type { AssignmentTable } from '../cluster/assignments.ts';
import type { ManagerState } from '../cluster/types.ts';
import { type Clock, systemClock } from '../lib/clock.ts';
import { errorMessage } from '../lib/errors.ts';
import type { EtcdClient, KeyValue, TxnOp } from './etcd/client.ts';
import { prefixEnd } from './etcd/wire.ts';
import {
  type BackupRecord,
  backupRecordSchema,
  type ConfigRecord,
  configRecordSchema,
  type EventRecord,
  type FormatRecord,
  formatRecordSchema,
  type Keys,
  keysFor,
  type NodeRecord,
  type NodeReport,
  nodeRecordSchema,
  nodeReportSchema,
  RECORD_VERSION,
  type RequestRecord,
  requestRecordSchema,
  type SettingRecord,
  type StateRecord,
  settingRecordSchema,
  stateRecordSchema,
} from './records.ts';

/** Operations per transaction we send (etcd's default limit is 128). */
const TXN_OPS = 100;

/** An operator's "back up now" as read, with what consuming it needs. */
export type BackupNowRequest = SettingRecord & { key: string; modRevision: number };

export interface Snapshot {
  revision: number;
  /** The cluster's format record (format.ts), undefined when there is none (format 1). */
  format: (FormatRecord & { modRevision: number }) | undefined;
  config: (ConfigRecord & { modRevision: number }) | undefined;
  /** Nodes whose lease is alive. */
  nodes: Record<string, NodeRecord>;
  reports: Record<string, NodeReport>;
  manager: { node: string; lease: string } | undefined;
  state: StateRecord | undefined;
  /** Why a stored state record was set aside: not the same as no state (format.ts's gate). */
  stateProblem: string | undefined;
  requests: { key: string; record: RequestRecord }[];
  initialized: Set<string>;
  /** Nodes in standby (the operator's setting). */
  standby: Record<string, SettingRecord>;
  /** Maintenance mode, when on. */
  maintenance: SettingRecord | undefined;
  /** Scheduled backup jobs (src/agent/backups.ts), by job, with the record's modRevision. */
  backups: Record<string, BackupRecord & { modRevision: number }>;
  /** "Back up now" requests by vserver (`backup-now/<vserver>`), with their key and modRevision. */
  backupNow: Record<string, BackupNowRequest>;
  /** Records set aside: key and why. */
  problems: string[];
}

export class ClusterStore {
  readonly keys: Keys;
  readonly client: EtcdClient;
  readonly node: string;
  #eventSeq = 0;
  /** Records as validated last time, by key: one unchanged since (same modRevision) is not parsed again. */
  #parsed = new Map<string, { modRevision: number; value: unknown; problems: string[] }>();

  /** Stamps the records it writes (wall time: other nodes compare it with theirs). */
  readonly #clock: Clock;

  constructor(client: EtcdClient, cluster: string, node: string, clock: Clock = systemClock) {
    this.client = client;
    this.keys = keysFor(cluster);
    this.node = node;
    this.#clock = clock;
  }

  async snapshot(timeoutMs: number): Promise<Snapshot> {
    const k = this.keys;
    // Events are many (up to EVENTS_KEPT) and only `cvserver events` reads them: everything else, in
    // one linearizable read of the keys before and after them (reading and decoding them every round
    // was most of an idle agent's read).
    const all = await this.client.ranges(
      [
        { key: k.prefix, end: k.events },
        { key: prefixEnd(k.events), end: prefixEnd(k.prefix) },
      ],
      { timeoutMs },
    );
    const snap: Snapshot = {
      revision: all.revision,
      format: undefined,
      config: undefined,
      nodes: {},
      reports: {},
      manager: undefined,
      state: undefined,
      stateProblem: undefined,
      requests: [],
      initialized: new Set(),
      standby: {},
      maintenance: undefined,
      backups: {},
      backupNow: {},
      problems: [],
    };
    // Each round reads every record; most have not changed since the last read (an idle agent's
    // biggest cost was validating the same JSON again).
    const seen = new Map<string, { modRevision: number; value: unknown; problems: string[] }>();
    const parse = <S extends z.ZodType>(
      kv: KeyValue,
      schema: S,
      problems: string[],
    ): z.infer<S> | undefined => {
      let p = this.#parsed.get(kv.key);
      if (p?.modRevision !== kv.modRevision) {
        const found: string[] = [];
        p = { modRevision: kv.modRevision, value: parseVersioned(kv, schema, found), problems: found };
      }
      seen.set(kv.key, p);
      problems.push(...p.problems);
      return p.value as z.infer<S> | undefined;
    };
    for (const kv of all.kvs) {
      const rel = kv.key.slice(k.prefix.length);
      if (rel.startsWith('events/')) continue;
      const slash = rel.indexOf('/');
      const kind = slash < 0 ? rel : rel.slice(0, slash);
      const name = slash < 0 ? '' : rel.slice(slash + 1);
      if (kind === 'format') {
        // Its own frozen shape, no version check: it is what says the version.
        const f = parseRecord(kv, formatRecordSchema, snap.problems);
        if (f) snap.format = { ...f, modRevision: kv.modRevision };
      } else if (kind === 'config') {
        const c = parse(kv, configRecordSchema, snap.problems);
        if (c) snap.config = { ...c, modRevision: kv.modRevision };
      } else if (kind === 'nodes') {
        const n = parse(kv, nodeRecordSchema, snap.problems);
        if (n) snap.nodes[name] = n;
      } else if (kind === 'reports') {
        const r = parse(kv, nodeReportSchema, snap.problems);
        if (r) snap.reports[name] = r;
      } else if (kind === 'manager') snap.manager = { node: kv.value, lease: kv.lease };
      else if (kind === 'state') {
        const before = snap.problems.length;
        snap.state = parse(kv, stateRecordSchema, snap.problems);
        if (!snap.state) snap.stateProblem = snap.problems[before] ?? `${kv.key}: unreadable`;
      } else if (kind === 'requests') {
        const r = parse(kv, requestRecordSchema, snap.problems);
        if (r) snap.requests.push({ key: kv.key, record: r });
      } else if (kind === 'initialized') snap.initialized.add(name);
      else if (kind === 'standby') {
        const r = parse(kv, settingRecordSchema, snap.problems);
        if (r) snap.standby[name] = r;
      } else if (kind === 'maintenance') snap.maintenance = parse(kv, settingRecordSchema, snap.problems);
      else if (kind === 'backups') {
        const b = parse(kv, backupRecordSchema, snap.problems);
        if (b) snap.backups[name] = { ...b, modRevision: kv.modRevision };
      } else if (kind === 'backup-now') {
        const r = parse(kv, settingRecordSchema, snap.problems);
        if (r) snap.backupNow[name] = { ...r, key: kv.key, modRevision: kv.modRevision };
      }
    }
    this.#parsed = seen;
    return snap;
  }

  /** Writes the format record if there is none yet (the first agent that acts); true when written. */
  async createFormat(format: number, timeoutMs: number): Promise<boolean> {
    const k = this.keys.format;
    const record: FormatRecord = { format, at: this.#clock.now(), by: this.node };
    const r = await this.client.txn(
      {
        compare: [{ key: k, target: 'createRevision', op: '=', value: 0 }],
        success: [{ op: 'put', key: k, value: JSON.stringify(record) }],
      },
      { timeoutMs },
    );
    return r.succeeded;
  }

  /**
   * Raises the cluster's format (the manager, when every live agent supports `to`): only over the record
   * it read and while it holds the manager's key with this lease.
   */
  async raiseFormat(to: number, readRevision: number, lease: string, timeoutMs: number): Promise<boolean> {
    const record: FormatRecord = { format: to, at: this.#clock.now(), by: this.node };
    const r = await this.client.txn(
      {
        compare: [
          { key: this.keys.format, target: 'modRevision', op: '=', value: readRevision },
          { key: this.keys.manager, target: 'value', op: '=', value: this.node },
          { key: this.keys.manager, target: 'lease', op: '=', value: lease },
        ],
        success: [{ op: 'put', key: this.keys.format, value: JSON.stringify(record) }],
      },
      { timeoutMs },
    );
    return r.succeeded;
  }

  /** Gives up the manager's key (an agent that may not act on the cluster), if this node holds it with `lease`. */
  async resignManager(lease: string, timeoutMs: number): Promise<boolean> {
    const k = this.keys.manager;
    const r = await this.client.txn(
      {
        compare: [
          { key: k, target: 'value', op: '=', value: this.node },
          { key: k, target: 'lease', op: '=', value: lease },
        ],
        success: [{ op: 'delete', key: k }],
      },
      { timeoutMs },
    );
    return r.succeeded;
  }

  putNode(record: NodeRecord, lease: string, timeoutMs: number): Promise<unknown> {
    return this.client.put(this.keys.node(this.node), JSON.stringify(record), { lease, timeoutMs });
  }

  putReport(report: NodeReport, lease: string, timeoutMs: number): Promise<unknown> {
    return this.client.put(this.keys.report(this.node), JSON.stringify(report), { lease, timeoutMs });
  }

  markInitialized(vserver: string, timeoutMs: number): Promise<unknown> {
    return this.client.put(this.keys.initialized(vserver), String(this.#clock.now()), { timeoutMs });
  }

  /** Takes the manager's key if nobody holds it; true when this node is the manager now. */
  async claimManager(lease: string, timeoutMs: number): Promise<boolean> {
    const k = this.keys.manager;
    const r = await this.client.txn(
      {
        compare: [{ key: k, target: 'createRevision', op: '=', value: 0 }],
        success: [{ op: 'put', key: k, value: this.node, lease }],
      },
      { timeoutMs },
    );
    return r.succeeded;
  }

  /**
   * Writes the manager's state and consumes the requests it handled, in one transaction that succeeds only while this node still holds the manager's key with this lease: a
   * deposed manager cannot overwrite its successor's decisions.
   */
  async writeManagerState(
    lease: string,
    state: ManagerState,
    table: AssignmentTable,
    consumed: string[],
    timeoutMs: number,
  ): Promise<boolean> {
    const record: StateRecord = {
      version: RECORD_VERSION,
      manager: this.node,
      at: this.#clock.now(),
      state,
      table,
    };
    const ops: TxnOp[] = [
      { op: 'put', key: this.keys.state, value: JSON.stringify(record) },
      ...consumed.map((key): TxnOp => ({ op: 'delete', key })),
    ];
    const r = await this.client.txn(
      {
        compare: [
          { key: this.keys.manager, target: 'value', op: '=', value: this.node },
          { key: this.keys.manager, target: 'lease', op: '=', value: lease },
        ],
        success: ops,
      },
      { timeoutMs },
    );
    return r.succeeded;
  }

  /**
   * Writes events under keys fixed when they were recorded (`eventKey`): a batch written again after a
   * timeout that had in fact succeeded overwrites itself instead of appearing twice.
   */
  async putEvents(events: { key: string; record: EventRecord }[], timeoutMs: number): Promise<void> {
    for (let i = 0; i < events.length; i += TXN_OPS)
      await this.client.txn(
        {
          compare: [],
          success: events
            .slice(i, i + TXN_OPS)
            .map((e): TxnOp => ({ op: 'put', key: e.key, value: JSON.stringify(e.record) })),
        },
        { timeoutMs },
      );
  }

  async putRequest(record: RequestRecord, timeoutMs: number): Promise<string> {
    const id = `${String(record.at).padStart(15, '0')}-${this.node}-${Math.random().toString(36).slice(2, 8)}`;
    await this.client.put(this.keys.request(id), JSON.stringify(record), { timeoutMs });
    return id;
  }

  /** An operator's "back up now" for a vserver: the node that runs it picks it up (src/agent/backups.ts). */
  async requestBackup(vserver: string, record: SettingRecord, timeoutMs: number): Promise<void> {
    await this.client.put(this.keys.backupNow(vserver), JSON.stringify(record), { timeoutMs });
  }

  /** Turns an operator's setting (a key of `keys`) on with who and when, or off. */
  async setSetting(key: string, on: SettingRecord | null, timeoutMs: number): Promise<void> {
    if (on) await this.client.put(key, JSON.stringify(on), { timeoutMs });
    else await this.client.delete(key, { timeoutMs });
  }

  /**
   * Writes a backup job's record only over the one read (`readRevision`, 0: none yet): two nodes that
   * both think a run is due cannot both start it, and a finished run is not overwritten by a stale one.
   * Returns the new modRevision, or undefined when the record changed meanwhile. `consume`: an
   * operator's "back up now" request this run answers, deleted in the same transaction (only as read:
   * a request made again meanwhile fails the claim, and the next round reads it).
   */
  async putBackup(
    record: BackupRecord,
    readRevision: number,
    timeoutMs: number,
    consume?: { key: string; modRevision: number },
  ): Promise<number | undefined> {
    const key = this.keys.backup(record.job);
    const r = await this.client.txn(
      {
        compare: [
          readRevision === 0
            ? { key, target: 'createRevision', op: '=', value: 0 }
            : { key, target: 'modRevision', op: '=', value: readRevision },
          ...(consume
            ? [
                {
                  key: consume.key,
                  target: 'modRevision' as const,
                  op: '=' as const,
                  value: consume.modRevision,
                },
              ]
            : []),
        ],
        success: [
          { op: 'put', key, value: JSON.stringify(record) },
          ...(consume ? [{ op: 'delete' as const, key: consume.key }] : []),
        ],
      },
      { timeoutMs },
    );
    return r.succeeded ? r.revision : undefined;
  }

  putConfig(record: ConfigRecord, timeoutMs: number): Promise<unknown> {
    return this.client.put(this.keys.config, JSON.stringify(record), { timeoutMs });
  }

  /** The newest `limit` events (oldest first, at or after `sinceMs`), and the total count. */
  async events(
    limit: number,
    timeoutMs: number,
    sinceMs?: number,
  ): Promise<{ events: EventRecord[]; count: number }> {
    // Event keys sort by time: a range from the first key at `sinceMs` to the end of the prefix.
    const from = sinceMs === undefined ? undefined : this.keys.event(Math.max(0, Math.floor(sinceMs)), '', 0);
    const r = await this.client.range(this.keys.events, { prefix: true, from, timeoutMs });
    const events: EventRecord[] = [];
    for (const kv of r.kvs.slice(-limit)) {
      try {
        events.push(JSON.parse(kv.value) as EventRecord);
      } catch {}
    }
    return { events, count: r.count };
  }

  /** Keeps the newest `keep` events (the cluster's log has a bounded size). */
  async trimEvents(keep: number, timeoutMs: number): Promise<number> {
    const r = await this.client.range(this.keys.events, { prefix: true, timeoutMs });
    const old = r.kvs.slice(0, Math.max(0, r.kvs.length - keep));
    // etcd takes at most 128 operations in one transaction.
    for (let i = 0; i < old.length; i += TXN_OPS)
      await this.client.txn(
        {
          compare: [],
          success: old.slice(i, i + TXN_OPS).map((kv): TxnOp => ({ op: 'delete', key: kv.key })),
        },
        { timeoutMs },
      );
    return old.length;
  }

  /** A key of its own for an event, in time order. */
  eventKey(e: EventRecord): string {
    this.#eventSeq = (this.#eventSeq + 1) % 1_000_000;
    return this.keys.event(e.at, e.node, this.#eventSeq);
  }
}

/** A record of this agent's format, validated (callers treat it as read-only: it may be cached). */
function parseVersioned<S extends z.ZodType>(
  kv: KeyValue,
  schema: S,
  problems: string[],
): z.infer<S> | undefined {
  return parseRecord(kv, schema, problems, true);
}

/** A record validated; `versioned`: set aside unless of this agent's format (all but the format record). */
function parseRecord<S extends z.ZodType>(
  kv: KeyValue,
  schema: S,
  problems: string[],
  versioned = false,
): z.infer<S> | undefined {
  let json: unknown;
  try {
    json = JSON.parse(kv.value);
  } catch (err) {
    problems.push(`${kv.key}: not JSON (${errorMessage(err)})`);
    return undefined;
  }
  const v = (json as { version?: unknown } | null)?.version;
  if (versioned && typeof v === 'number' && v !== RECORD_VERSION) {
    problems.push(
      `${kv.key}: stored format version ${v}, this agent knows version ${RECORD_VERSION} (upgrade this agent)`,
    );
    return undefined;
  }
  return check(kv, json, schema, problems);
}

function check<S extends z.ZodType>(
  kv: KeyValue,
  json: unknown,
  schema: S,
  problems: string[],
): z.infer<S> | undefined {
  const r = schema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0]!;
    problems.push(`${kv.key}: ${i.path.join('.') || '(record)'}: ${i.message}`);
    return undefined;
  }
  return r.data;
}
