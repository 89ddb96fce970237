import { emptyState, step } from '../cluster/manager.ts';
import type {
  Command,
  ManagerState,
  Observation,
  OperatorEvent,
  Policy,
  Report,
  RunStatus,
} from '../cluster/types.ts';
import type { ClusterConfig, ScriptCommand } from './scenario.ts';

const START_TIME = 2; // seconds from assign to healthy
const RESYNC_TIME = 3; // seconds for a stale replica to catch up with a running primary
const FENCE_MARGIN = 2; // a cut-off node stops its vservers this long before its lease ends

interface Local {
  status: RunStatus;
  since: number;
  epoch: number;
}

interface SimNode {
  name: string;
  power: boolean;
  net: boolean;
  lease: number | null; // expiry time stored in the cluster
  local: Map<string, Local>;
}

/**
 * A simulated cluster: nodes with leases, a key-value store (leases, reports, the manager's state),
 * vservers that start, become healthy and fail on command. One `tick` is one second.
 */
export class Simulator {
  readonly cfg: ClusterConfig;
  readonly policy: Policy;
  readonly ttl: number;
  now = 0;
  nodes = new Map<string, SimNode>();
  desired = new Map<string, 'started' | 'stopped' | 'disabled'>();
  replicas = new Map<string, Map<string, { upToDate: boolean; syncFrom: number | null }>>();
  broken = new Set<string>();
  standby = new Set<string>();
  maintenance = false;
  /** The manager state as stored in the cluster. */
  stored: ManagerState = emptyState();
  events: OperatorEvent[] = [];
  log: string[] = [];
  /** Highest epoch ever assigned per vserver (invariant check). */
  epochs = new Map<string, number>();
  violations: string[] = [];

  constructor(cfg: ClusterConfig) {
    this.cfg = cfg;
    const { lease_ttl, ...policy } = cfg.policy;
    this.policy = policy;
    this.ttl = lease_ttl;
    for (const n of cfg.nodes)
      this.nodes.set(n, { name: n, power: !cfg.down.includes(n), net: true, lease: null, local: new Map() });
    for (const [name, v] of Object.entries(cfg.vservers)) {
      this.desired.set(name, v.desired);
      this.replicas.set(name, new Map(v.replicas.map((n) => [n, { upToDate: true, syncFrom: null }])));
    }
  }

  private say(line: string): void {
    this.log.push(`${String(this.now).padStart(4)} ${line}`);
  }

  apply(c: ScriptCommand, text: string): void {
    this.say(`cmd: ${text}`);
    switch (c.kind) {
      case 'power': {
        const n = this.nodes.get(c.node)!;
        n.power = c.on;
        // Processes die with the machine; the node remembers what it had, as stopped.
        if (!c.on) for (const l of n.local.values()) Object.assign(l, { status: 'stopped', since: this.now });
        break;
      }
      case 'network':
        this.nodes.get(c.node)!.net = c.up;
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
          const l = n.local.get(c.vserver);
          if (n.power && l && (l.status === 'healthy' || l.status === 'running'))
            Object.assign(l, { status: 'failed', since: this.now });
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

  private connected(n: SimNode): boolean {
    return n.power && n.net;
  }

  /** Advances one second: nodes act, replicas sync, the manager decides, commands are delivered. */
  tick(): void {
    this.now += 1;
    const t = this.now;
    for (const n of this.nodes.values()) {
      if (!n.power) continue;
      for (const [v, l] of n.local) {
        if (l.status === 'starting' && t - l.since >= START_TIME) {
          l.status = this.broken.has(v) ? 'failed' : 'healthy';
          l.since = t;
        } else if (l.status === 'stopping' && t - l.since >= 1) n.local.delete(v);
      }
      if (n.net) n.lease = t + this.ttl;
      else if (n.lease !== null && t >= n.lease - FENCE_MARGIN) {
        // Self-fencing: stop everything before the lease can end, so nobody else starts it while we write.
        for (const l of n.local.values())
          if (l.status !== 'stopped') {
            l.status = 'stopped';
            l.since = t;
          }
      }
    }
    this.syncReplicas();
    const obs = this.observe();
    const res = step(this.stored, obs, t, this.events, this.policy);
    this.events = [];
    this.stored = res.state;
    for (const line of res.log) this.say(`manager: ${line}`);
    for (const c of res.commands) this.deliver(c);
    this.checkInvariants(obs, res.commands);
  }

  private syncReplicas(): void {
    const t = this.now;
    for (const [v, reps] of this.replicas) {
      const primary = [...this.nodes.values()].find(
        (n) => n.power && n.net && isActive(n.local.get(v)?.status),
      );
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
        const l = n.local.get(name);
        if (l && this.connected(n)) reports[n.name] = { status: l.status, since: l.since };
        else if (!this.connected(n) && this.lastReports.get(`${n.name}/${name}`))
          reports[n.name] = this.lastReports.get(`${n.name}/${name}`)!;
      }
      for (const n of this.nodes.values())
        if (this.connected(n)) {
          const l = n.local.get(name);
          if (l) this.lastReports.set(`${n.name}/${name}`, { status: l.status, since: l.since });
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

  private deliver(c: Command): void {
    if (c.kind === 'mark') return;
    const n = this.nodes.get(c.node)!;
    if (!this.connected(n)) {
      this.say(`sim: ${c.kind} ${c.vserver} not delivered: ${c.node} unreachable`);
      return;
    }
    if (c.kind === 'assign') {
      const top = this.epochs.get(c.vserver) ?? 0;
      if (c.epoch <= top)
        this.violations.push(`t=${this.now}: ${c.vserver} epoch ${c.epoch} not above ${top}`);
      this.epochs.set(c.vserver, c.epoch);
      n.local.set(c.vserver, { status: 'starting', since: this.now, epoch: c.epoch });
    } else if (c.kind === 'restart') {
      n.local.set(c.vserver, { status: 'starting', since: this.now, epoch: c.epoch });
    } else {
      const l = n.local.get(c.vserver);
      if (l && l.status !== 'stopped') Object.assign(l, { status: 'stopping', since: this.now });
      else n.local.delete(c.vserver);
    }
  }

  private checkInvariants(obs: Observation, commands: Command[]): void {
    const t = this.now;
    const bad = (m: string) => this.violations.push(`t=${t}: ${m}`);
    for (const v of Object.keys(this.cfg.vservers)) {
      const on = [...this.nodes.values()]
        .filter((n) => n.power && isActive(n.local.get(v)?.status))
        .map((n) => n.name);
      if (on.length > 1) bad(`${v} running on ${on.join(' and ')}`);
    }
    const node = new Map(obs.nodes.map((n) => [n.name, n]));
    for (const c of commands) {
      if (c.kind !== 'assign') continue;
      const v = obs.vservers.find((x) => x.name === c.vserver)!;
      if (!v.upToDate.includes(c.node))
        bad(`${c.vserver} assigned to ${c.node} without an up-to-date replica`);
      const n = node.get(c.node);
      if (n?.lease !== 'alive' || n.standby)
        bad(`${c.vserver} assigned to ${c.node} whose lease is ${n?.lease} or in standby`);
    }
    if (!obs.maintenance)
      for (const [v, s] of Object.entries(this.stored.vservers))
        if (s.node && node.get(s.node)?.lease !== 'alive')
          bad(`${v} still assigned to ${s.node} whose lease is ${node.get(s.node)?.lease}`);
  }

  /** Vservers that should run and are healthy somewhere (liveness checks). */
  healthyCount(): { healthy: number; expected: number; missing: string[] } {
    const missing: string[] = [];
    let expected = 0;
    for (const v of Object.keys(this.cfg.vservers)) {
      if (this.desired.get(v) !== 'started') continue;
      expected++;
      const ok = [...this.nodes.values()].some((n) => n.power && n.local.get(v)?.status === 'healthy');
      if (!ok) missing.push(v);
    }
    return { healthy: expected - missing.length, expected, missing };
  }
}

function isActive(s: RunStatus | undefined): boolean {
  return s === 'starting' || s === 'running' || s === 'healthy' || s === 'failed' || s === 'stopping';
}

/** Runs a scenario script to its end and returns the log and any invariant violations. */
export function runScript(cfg: ClusterConfig, script: { at: number; text: string; cmd: ScriptCommand }[]) {
  const sim = new Simulator(cfg);
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
  return { log: sim.log, violations: sim.violations, sim };
}
