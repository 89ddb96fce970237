import { type AssignmentTable, applyCommands } from '../cluster/assignments.ts';
import {
  type ClusterSnapshot,
  checkAssignment,
  checkEpochs,
  checkLeaseCoversRunning,
  checkNoDeadOwner,
  checkSingleWriter,
} from '../cluster/invariants.ts';
import { emptyState, step } from '../cluster/manager.ts';
import {
  afterRestart,
  emptyLocal,
  type NodeAction,
  type NodeEvent,
  type NodeLocal,
  type NodeTiming,
  nodeStep,
} from '../cluster/node.ts';
import type { Command, ManagerState, Observation, OperatorEvent, Policy, Report } from '../cluster/types.ts';
import type { ClusterConfig, ScriptCommand } from './scenario.ts';

const START_TIME = 2; // seconds from the start action to healthy (or failed if broken)
const STOP_TIME = 1; // seconds for a soft stop; a hard stop is immediate
const RESYNC_TIME = 3; // seconds for a stale replica to catch up with a running primary
const FENCE_MARGIN = 2; // a node stops its vservers this long before its lease can end
const GUARD_MARGIN = FENCE_MARGIN / 2; // the guard of a hung agent kills this long before

/** Resources of a vserver that are up on a node, and the action in progress on them. */
interface Proc {
  epoch: number;
  job: { kind: 'start' | 'stop'; doneAt: number } | null;
}

interface SimNode {
  name: string;
  power: boolean;
  /** The network to the other nodes (replication and the store). */
  net: boolean;
  /** The store (etcd) alone is reachable. */
  store: boolean;
  /** The agent's loop is stuck: no renewals, no steps; its processes run on. */
  hung: boolean;
  lease: number | null; // expiry time stored in the cluster
  /** The agent: what it remembers, driven by nodeStep. */
  local: NodeLocal;
  /** The node's copy of the assignment table: only updated while it is connected. */
  table: AssignmentTable;
  /** What really runs (the invariants look at this, not at what the agent believes). */
  procs: Map<string, Proc>;
  /** Events the agent has not taken in yet (it is hung). */
  pending: NodeEvent[];
}

export interface SimOptions {
  /** Log the nodes' decisions (`n1: ...` lines) too. */
  nodeLog?: boolean;
  /** Keep every line, node lines included, in `trace` (for `sim run --verbose`). */
  trace?: boolean;
}

/**
 * A simulated cluster: nodes with leases and agents (each a NodeLocal driven by nodeStep), a key-value
 * store (leases, reports, the assignment table, the manager's state), vservers that start, become
 * healthy and fail on command. One `tick` is one second.
 */
export class Simulator {
  readonly cfg: ClusterConfig;
  readonly policy: Policy;
  readonly ttl: number;
  readonly timing: NodeTiming;
  now = 0;
  nodes = new Map<string, SimNode>();
  desired = new Map<string, 'started' | 'stopped' | 'disabled'>();
  replicas = new Map<string, Map<string, { upToDate: boolean; syncFrom: number | null }>>();
  broken = new Set<string>();
  standby = new Set<string>();
  maintenance = false;
  /** The manager state as stored in the cluster. */
  stored: ManagerState = emptyState();
  /** The assignment table as stored in the cluster. */
  table: AssignmentTable = {};
  events: OperatorEvent[] = [];
  log: string[] = [];
  trace: string[] = [];
  /** Highest epoch ever assigned per vserver (invariant check). */
  epochs: Record<string, number> = {};
  violations: string[] = [];
  private readonly opts: SimOptions;

  constructor(cfg: ClusterConfig, opts: SimOptions = {}) {
    this.cfg = cfg;
    this.opts = opts;
    const { lease_ttl, ...policy } = cfg.policy;
    this.policy = policy;
    this.ttl = lease_ttl;
    this.timing = { leaseTtl: lease_ttl, fenceMargin: FENCE_MARGIN };
    for (const n of cfg.nodes)
      this.nodes.set(n, {
        name: n,
        power: !cfg.down.includes(n),
        net: true,
        store: true,
        hung: false,
        lease: null,
        local: emptyLocal(n),
        table: {},
        procs: new Map(),
        pending: [],
      });
    for (const [name, v] of Object.entries(cfg.vservers)) {
      this.desired.set(name, v.desired);
      this.replicas.set(name, new Map(v.replicas.map((n) => [n, { upToDate: true, syncFrom: null }])));
    }
  }

  private say(line: string, nodeLine = false): void {
    const out = `${String(this.now).padStart(4)} ${line}`;
    if (this.opts.trace) this.trace.push(out);
    if (!nodeLine || this.opts.nodeLog) this.log.push(out);
  }

  apply(c: ScriptCommand, text: string): void {
    this.say(`cmd: ${text}`);
    switch (c.kind) {
      case 'power': {
        const n = this.nodes.get(c.node)!;
        if (!c.on) {
          // Processes and the agent die with the machine; the agent comes back knowing what it had, as stopped.
          n.procs.clear();
          n.pending = [];
          n.hung = false;
          n.local = afterRestart(n.local, this.now);
        }
        n.power = c.on;
        break;
      }
      case 'network':
        this.nodes.get(c.node)!.net = c.up;
        break;
      case 'store':
        this.nodes.get(c.node)!.store = c.up;
        break;
      case 'agent':
        this.nodes.get(c.node)!.hung = c.hung;
        break;
      case 'fail-health':
      case 'break':
        if (c.kind === 'break') {
          if (!c.broken) {
            this.broken.delete(c.vserver);
            break;
          }
          this.broken.add(c.vserver);
        }
        for (const n of this.nodes.values()) {
          const s = n.local.vservers[c.vserver]?.status;
          if (n.power && (s === 'healthy' || s === 'running'))
            this.feed(n, [{ kind: 'health', vserver: c.vserver, healthy: false }]);
        }
        break;
      case 'migrate':
        this.events.push({ kind: 'migrate', vserver: c.vserver, node: c.node });
        break;
      case 'clear':
        this.events.push({ kind: 'clear', vserver: c.vserver });
        break;
      case 'standby':
        if (c.on) this.standby.add(c.node);
        else this.standby.delete(c.node);
        break;
      case 'maintenance':
        this.maintenance = c.on;
        break;
      case 'set':
        this.desired.set(c.vserver, c.desired);
        break;
      case 'replica': {
        const r = this.replicas.get(c.vserver)!.get(c.node);
        if (r) Object.assign(r, { upToDate: c.upToDate, syncFrom: null });
        break;
      }
      case 'failover':
        // A new manager knows only what is stored in the cluster.
        this.stored = JSON.parse(JSON.stringify(this.stored)) as ManagerState;
        this.say('manager: a new manager takes over from the state stored in the cluster');
        break;
      case 'end':
        break;
    }
  }

  /** Replication traffic flows (the store may still be out of reach). */
  private connected(n: SimNode): boolean {
    return n.power && n.net;
  }

  /** The agent talks to the store: it renews, publishes reports and reads the table. */
  private reachable(n: SimNode): boolean {
    return n.power && n.net && n.store && !n.hung;
  }

  /** Hands events to the agent: now, or when it resumes if it is hung. */
  private feed(n: SimNode, events: NodeEvent[]): void {
    if (n.hung) n.pending.push(...events);
    else this.runNode(n, events);
  }

  /** One nodeStep, its actions carried out; immediate outcomes (hard stops) go into another step. */
  private runNode(n: SimNode, events: NodeEvent[]): void {
    let evs = events;
    for (;;) {
      const r = nodeStep(n.local, evs, this.now, this.timing);
      n.local = r.local;
      for (const line of r.log) this.say(`${n.name}: ${line}`, true);
      evs = r.actions.flatMap((a) => this.carryOut(n, a));
      if (evs.length === 0) return;
    }
  }

  private carryOut(n: SimNode, a: NodeAction): NodeEvent[] {
    const t = this.now;
    if (a.kind === 'start' || a.kind === 'restart') {
      n.procs.set(a.vserver, { epoch: a.epoch, job: { kind: 'start', doneAt: t + START_TIME } });
      return [];
    }
    const p = n.procs.get(a.vserver);
    if (!a.hard && p) {
      p.job = { kind: 'stop', doneAt: t + STOP_TIME };
      return [];
    }
    n.procs.delete(a.vserver);
    return [{ kind: 'stopped', vserver: a.vserver }];
  }

  /** Advances one second: nodes act, replicas sync, the manager decides, nodes read the table. */
  tick(): void {
    this.now += 1;
    const t = this.now;
    for (const n of this.nodes.values()) {
      if (!n.power) continue;
      const events: NodeEvent[] = [];
      if (this.reachable(n)) {
        if (n.lease !== null && n.lease <= t && n.local.leaseUntil !== null)
          events.push({ kind: 'lease-lost', reason: 'the store let it expire' });
        events.push({ kind: 'renewed', sentAt: t });
        n.lease = t + this.ttl;
      }
      events.push(...n.pending);
      n.pending = [];
      for (const [v, p] of [...n.procs]) {
        if (!p.job || p.job.doneAt > t) continue;
        if (p.job.kind === 'stop') {
          n.procs.delete(v);
          events.push({ kind: 'stopped', vserver: v });
        } else if (this.broken.has(v)) {
          p.job = null;
          events.push({ kind: 'start-failed', vserver: v, error: 'broken' });
        } else {
          p.job = null;
          events.push({ kind: 'started', vserver: v, epoch: p.epoch });
          events.push({ kind: 'health', vserver: v, healthy: true });
        }
      }
      if (n.hung) {
        n.pending = events;
        this.guard(n);
      } else this.runNode(n, events);
    }
    this.syncReplicas();
    const obs = this.observe();
    const res = step(this.stored, obs, t, this.events, this.policy);
    this.events = [];
    this.stored = res.state;
    for (const line of res.log) this.say(`manager: ${line}`);
    this.table = applyCommands(this.table, res.commands);
    this.deliver(res.commands);
    this.checkInvariants(obs, res.commands);
  }

  /** The independent guard of a hung agent kills its vservers shortly before the lease can end. */
  private guard(n: SimNode): void {
    const until = n.local.leaseUntil;
    if (n.procs.size === 0 || (until !== null && this.now < until - GUARD_MARGIN)) return;
    const names = [...n.procs.keys()].sort();
    this.say(
      `sim: ${n.name}'s guard kills ${names.join(', ')} (agent hung${until === null ? ', no lease' : `, lease until ${until}`})`,
    );
    n.procs.clear();
    for (const v of names) n.pending.push({ kind: 'crashed', vserver: v, reason: 'killed by the guard' });
  }

  private syncReplicas(): void {
    const t = this.now;
    for (const [v, reps] of this.replicas) {
      const primary = [...this.nodes.values()].find((n) => this.connected(n) && n.procs.has(v));
      if (!primary) {
        for (const r of reps.values()) r.syncFrom = null;
        continue;
      }
      for (const [name, r] of reps) {
        if (name === primary.name) {
          r.upToDate = true; // the running copy is the reference
          continue;
        }
        const n = this.nodes.get(name)!;
        if (!this.connected(n)) {
          // The primary keeps writing with quorum: an unreachable replica falls behind.
          if (r.upToDate)
            this.say(`sim: ${v} replica on ${name} falls behind (${primary.name} writes without it)`);
          r.upToDate = false;
          r.syncFrom = null;
        } else if (!r.upToDate) {
          r.syncFrom ??= t;
          if (t - r.syncFrom >= RESYNC_TIME) {
            this.say(`sim: ${v} replica on ${name} caught up with ${primary.name}`);
            r.upToDate = true;
            r.syncFrom = null;
          }
        }
      }
    }
  }

  observe(): Observation {
    const t = this.now;
    const nodes = [...this.nodes.values()].map((n) => ({
      name: n.name,
      lease: n.lease === null ? ('never' as const) : n.lease > t ? ('alive' as const) : ('expired' as const),
      standby: this.standby.has(n.name),
    }));
    const vservers = Object.entries(this.cfg.vservers).map(([name, v]) => {
      const reps = this.replicas.get(name)!;
      const reports: Record<string, Report> = {};
      // Reports are published under the node's lease: visible while the lease lives, last value when cut off.
      for (const n of this.nodes.values()) {
        if (n.lease === null || n.lease <= t) continue;
        const l = n.local.vservers[name];
        if (l && this.reachable(n)) reports[n.name] = { status: l.status, since: l.since, epoch: l.epoch };
        else if (!this.reachable(n) && this.lastReports.get(`${n.name}/${name}`))
          reports[n.name] = this.lastReports.get(`${n.name}/${name}`)!;
      }
      for (const n of this.nodes.values())
        if (this.reachable(n)) {
          const l = n.local.vservers[name];
          if (l)
            this.lastReports.set(`${n.name}/${name}`, { status: l.status, since: l.since, epoch: l.epoch });
          else this.lastReports.delete(`${n.name}/${name}`);
        }
      return {
        name,
        desired: this.desired.get(name)!,
        preferred: v.preferred,
        avoid: v.avoid,
        antiAffinity: v.anti_affinity,
        upToDate: [...reps].filter(([, r]) => r.upToDate).map(([n]) => n),
        stale: [...reps].filter(([, r]) => !r.upToDate).map(([n]) => n),
        reports,
      };
    });
    return { maintenance: this.maintenance, nodes, vservers };
  }

  private lastReports = new Map<string, Report>();

  /** Nodes read the table: those connected to the store see the commands; the others' copies stay old. */
  private deliver(commands: Command[]): void {
    for (const c of commands) {
      if (c.kind === 'mark') continue;
      const n = this.nodes.get(c.node)!;
      if (!this.reachable(n))
        this.say(
          `sim: ${c.kind} ${c.vserver} not delivered: ${c.node} ${n.power && n.net && n.store ? 'agent hung' : 'unreachable'}`,
        );
    }
    if (!commands.some((c) => c.kind !== 'mark')) return;
    for (const n of this.nodes.values()) {
      if (!this.reachable(n)) continue;
      n.table = applyCommands(n.table, commands);
      this.runNode(n, [{ kind: 'assignments', table: n.table }]);
    }
  }

  /** What really runs where, and the lease each node believes it holds. */
  snapshot(): ClusterSnapshot {
    return {
      now: this.now,
      nodes: [...this.nodes.values()]
        .filter((n) => n.power)
        .map((n) => ({ name: n.name, active: [...n.procs.keys()], leaseUntil: n.local.leaseUntil })),
    };
  }

  private checkInvariants(obs: Observation, commands: Command[]): void {
    const snap = this.snapshot();
    const epochs = checkEpochs(this.epochs, commands);
    this.epochs = epochs.highest;
    const found = [
      ...checkSingleWriter(snap),
      ...checkLeaseCoversRunning(snap),
      ...epochs.violations,
      ...checkAssignment(obs, commands),
      ...checkNoDeadOwner(obs, this.stored),
    ];
    for (const m of found) this.violations.push(`t=${this.now}: ${m}`);
  }

  /** Vservers that should run and are healthy somewhere (liveness checks). */
  healthyCount(): { healthy: number; expected: number; missing: string[] } {
    const missing: string[] = [];
    let expected = 0;
    for (const v of Object.keys(this.cfg.vservers)) {
      if (this.desired.get(v) !== 'started') continue;
      expected++;
      const ok = [...this.nodes.values()].some(
        (n) => n.power && n.procs.has(v) && n.local.vservers[v]?.status === 'healthy',
      );
      if (!ok) missing.push(v);
    }
    return { healthy: expected - missing.length, expected, missing };
  }
}

/** Runs a scenario script to its end and returns the log and any invariant violations. */
export function runScript(
  cfg: ClusterConfig,
  script: { at: number; text: string; cmd: ScriptCommand }[],
  opts: { trace?: boolean } = {},
) {
  const sim = new Simulator(cfg, { nodeLog: cfg.node_log, trace: opts.trace });
  const endCmd = script.find((c) => c.cmd.kind === 'end');
  const end = endCmd ? endCmd.at : (script.at(-1)?.at ?? 0) + 40;
  let i = 0;
  while (sim.now < end) {
    while (i < script.length && script[i]!.at <= sim.now) {
      sim.apply(script[i]!.cmd, script[i]!.text);
      i++;
    }
    sim.tick();
  }
  return { log: sim.log, trace: sim.trace, violations: sim.violations, sim };
}
