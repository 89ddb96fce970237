/**
 * A seeded simulation of one replicated volume: 2 or 3 replicas and optionally a diskless
 * tiebreaker, each the real engine (ReplicatedDevice + ReplicaServer) on the memory network, memory
 * disks and one ManualClock. An "agent" promotes as the node agent would (a rising epoch, the nodes
 * it knows to be down passed as absent, any live replica whose own disk says UpToDate as the manager
 * does, never while another primary runs); the application writes and flushes; faults are drawn from the
 * seed. After every step the checker (checker.ts) asserts the invariants; the first violation ends
 * the run with the seed and the trace.
 */
import { ManualClock } from '../../../src/lib/clock.ts';
import { mulberry32 } from '../../../src/sim/prng.ts';
import type { ConnectionLog } from '../../../src/volume/replication/connection.ts';
import type { QuorumPolicy } from '../../../src/volume/replication/role.ts';
import { check, type Violation } from './checker.ts';
import { MemoryNetwork } from './memory-network.ts';
import { BLOCK, blockData, Model } from './model.ts';
import { type ClusterShape, SimNode } from './sim-node.ts';

export interface SimConfig {
  seed: number;
  steps: number;
  replicas: 2 | 3;
  tiebreaker: boolean;
  quorum: QuorumPolicy;
  durableWrites: boolean;
  /**
   * `ci`: one machine failure at a time, link cuts, no partitions, replicas that write durably, and
   * a cluster left without a primary counted rather than failed (the CI run: it passes today);
   * `full`: several failures at once, partitions, unflushed replica writes, liveness enforced (finds
   * the open issues of /work/notes/issue14-sim.md).
   */
  profile: 'ci' | 'full';
  /** Keep the engine's log lines (the last ones are printed with a failure). */
  verbose?: boolean;
}

export interface SimResult {
  config: SimConfig;
  steps: number;
  simulatedMs: number;
  violation: Violation | undefined;
  trace: string[];
  log: string[];
  faults: Record<string, number>;
  /** Why the run ended without a primary after settling (a safe outcome the engine states), if it did. */
  stuck?: string;
}

/** The configuration a seed runs with (topology and policies are drawn from it too). */
export function configFor(seed: number, steps: number, profile: SimConfig['profile'] = 'ci'): SimConfig {
  const r = mulberry32(seed ^ 0x5bd1e995);
  const replicas = r() < 0.5 ? 2 : 3;
  return {
    seed,
    steps,
    replicas,
    // Two replicas need a tiebreaker to survive one failure; three may have one too.
    tiebreaker: replicas === 2 ? r() < 0.85 : r() < 0.3,
    quorum: r() < 0.75 ? 'suspend-io' : 'io-error',
    durableWrites: r() < 0.5 || profile === 'ci',
    profile,
  };
}

const BLOCKS = 48;
const PROMOTE_WAIT_MS = 3000;
const DEMOTE_LIMIT_MS = 10_000;

export class Simulation {
  readonly cfg: SimConfig;
  readonly clock = new ManualClock(1_700_000_000_000);
  readonly pick: () => number;
  readonly net: MemoryNetwork;
  readonly nodes: SimNode[] = [];
  readonly shape: ClusterShape;
  readonly model = new Model(BLOCKS);
  readonly trace: string[] = [];
  readonly log: string[] = [];
  readonly faults: Record<string, number> = {};
  #genRandom: () => number;
  step = 0;
  /** The primary the agent promoted and has not stopped (the application writes to it). */
  primary: SimNode | undefined;
  /** The agent's view: replicas in sync with the last primary at its last report. */
  inSync = new Set<string>();
  epoch = 0;
  busy = false;
  /** The primary's application is being stopped: no new writes. */
  stopping = false;
  failure: Violation | undefined;
  /** Each replica's last promotion refusal, cleared when one succeeds (the settle's reason). */
  refusals = new Map<string, string>();
  stuck: string | undefined;

  constructor(cfg: SimConfig) {
    this.cfg = cfg;
    this.pick = mulberry32(cfg.seed);
    this.net = new MemoryNetwork(this.clock, mulberry32(cfg.seed ^ 0x1234567));
    this.#genRandom = mulberry32(cfg.seed ^ 0x7654321);
    const diskRandom = mulberry32(cfg.seed ^ 0x2468ace);
    const names = ['n1', 'n2', 'n3'].slice(0, cfg.replicas);
    this.shape = {
      volumeUuid: 'simvol',
      secret: Buffer.from('simulation secret'),
      size: BLOCKS * BLOCK,
      quorum: cfg.quorum,
      afterSplitBrain: 'disconnect',
      durableWrites: cfg.durableWrites,
      nodes: [
        ...names.map((name) => ({ name, tiebreaker: false })),
        ...(cfg.tiebreaker ? [{ name: 'tb', tiebreaker: true }] : []),
      ],
    };
    for (const n of this.shape.nodes)
      this.nodes.push(new SimNode(n.name, n.tiebreaker, this.shape, this.clock, diskRandom));
    for (const n of names) this.inSync.add(n);
  }

  #randomBytes = (n: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.#genRandom() * 256);
    return b;
  };

  #logger = (node: string): ConnectionLog => {
    const line = (level: string) => (obj: object, msg: string) => {
      if (!this.cfg.verbose && level === 'info') return;
      this.log.push(
        `${(this.clock.now() - 1_700_000_000_000).toFixed(1)} ${node} ${level} ${msg} ${JSON.stringify(obj)}`,
      );
      if (this.log.length > (this.cfg.verbose ? 50_000 : 400)) this.log.splice(0, 200);
    };
    return { info: line('info'), warn: line('warn') };
  };

  count(kind: string): void {
    this.faults[kind] = (this.faults[kind] ?? 0) + 1;
  }

  note(s: string): void {
    this.trace.push(`#${this.step} t=${(this.clock.now() - 1_700_000_000_000).toFixed(1)}ms ${s}`);
  }

  rand(n: number): number {
    return Math.floor(this.pick() * n);
  }

  get dataNodes(): SimNode[] {
    return this.nodes.filter((n) => !n.tiebreaker);
  }

  /** Lets every ready microtask and immediate run (no real I/O or timers exist, so this is deterministic). */
  async drain(): Promise<void> {
    // Promise jobs first (most chains are a few awaits deep: cheaper than an event-loop turn), then
    // one turn for what waits on process.nextTick or setImmediate.
    for (let i = 0; i < 8; i++) await null;
    await new Promise((resolve) => setImmediate(resolve));
  }

  /** Moves simulated time forward, firing due timers one by one. */
  async advance(ms: number): Promise<void> {
    const until = this.clock.now() + ms;
    for (let due = this.clock.nextDue(); due !== undefined && due <= until; due = this.clock.nextDue()) {
      this.clock.runNext();
      await this.drain();
      if (this.failure) return;
    }
    this.clock.advance(until - this.clock.now());
    await this.drain();
  }

  async start(node: SimNode): Promise<void> {
    this.net.rebooted(node.name);
    await node.start(this.shape, this.clock, this.net, this.#randomBytes, this.#logger);
  }

  crash(node: SimNode): void {
    const lost = node.crash(this.net);
    this.model.crashed(node.name);
    this.note(`crash ${node.name} (unsynced sectors lost: ${lost})`);
    if (this.primary === node) {
      // Writes in flight on it may or may not have reached the others.
      for (const b of this.model.inflight) this.model.uncertain.add(b);
      this.model.inflight.clear();
      this.primary = undefined;
    }
  }

  // ---- the application

  write(to?: SimNode): void {
    const p = to ?? this.primary;
    if (!p?.proc?.device || this.stopping || this.model.inflight.size >= 6) return;
    const free = [...Array(BLOCKS).keys()].filter((b) => !this.model.inflight.has(b));
    const block = free[this.rand(free.length)]!;
    const stamp = ++this.model.stamp;
    const data = blockData(stamp, block, this.epoch);
    const device = p.proc.device;
    this.model.inflight.add(block);
    this.note(`write block ${block} stamp ${stamp} on ${p.name}`);
    device.write(block * BLOCK, data).then(
      () => {
        if (p.proc?.device !== device) return; // its machine died meanwhile: never acknowledged
        this.model.inflight.delete(block);
        this.model.uncertain.delete(block);
        const holders = new Set(
          this.dataNodes
            .filter((n) => n.disk!.current.subarray(block * BLOCK, (block + 1) * BLOCK).equals(data))
            .map((n) => n.name),
        );
        this.model.acked.set(block, {
          stamp,
          data,
          flushed: false,
          holders,
          writer: p.name,
          crashedSince: new Set(),
          ackedAtStep: this.step,
        });
      },
      (err: Error) => {
        if (p.proc?.device !== device) return;
        this.model.inflight.delete(block);
        this.model.uncertain.add(block);
        this.note(`write stamp ${stamp} failed: ${err.message}`);
      },
    );
  }

  flush(): void {
    const p = this.primary;
    if (!p?.proc?.device) return;
    const device = p.proc.device;
    // A flush covers the writes acknowledged before it starts.
    // (Not a write whose primary lost power since: its data may be gone already.)
    const covered = [...this.model.acked.values()].filter((w) => !w.flushed && !w.crashedSince.has(w.writer));
    this.note(`flush on ${p.name} (${covered.length} writes)`);
    device.flush().then(
      () => {
        if (p.proc?.device !== device) return;
        for (const w of covered) w.flushed = true;
      },
      () => undefined,
    );
  }

  // ---- the agent

  /** The agent's report of the primary: which replicas are in sync with it. */
  report(): void {
    const p = this.primary;
    const device = p?.proc?.device;
    if (!p || device?.role !== 'Primary') return;
    const st = device.status();
    if (st.fenced) return;
    const inSync = new Set([p.name]);
    for (const peer of st.peers) {
      const n = this.nodes.find((x) => x.name === peer.node)!;
      if (!n.tiebreaker && n.up && peer.connection === 'Connected' && peer.outOfSyncBytes === 0)
        inSync.add(peer.node);
    }
    this.inSync = inSync;
  }

  /** Promotes a replica the agent may choose, if there is none running. */
  async promote(force?: SimNode, except?: SimNode): Promise<void> {
    if (this.primary || this.busy) return;
    // The manager's rule (src/agent/observation.ts): any live replica whose own disk says UpToDate.
    const candidates = force
      ? [force]
      : this.dataNodes.filter((n) => n.up && n !== except && n.meta.diskState === 'UpToDate');
    const target = candidates[this.rand(candidates.length)];
    if (!target?.proc?.device) return;
    const device = target.proc.device;
    const epoch = ++this.epoch;
    const absent = this.nodes.filter((n) => !n.up).map((n) => n.name);
    this.note(`promote ${target.name} epoch ${epoch} absent [${absent.join(',')}]`);
    this.busy = true;
    const r = await this.#within(device.promote(epoch, PROMOTE_WAIT_MS, false, absent), PROMOTE_WAIT_MS * 3);
    this.busy = false;
    if (target.proc?.device !== device) return;
    if (r === undefined) {
      this.note(`promote ${target.name} did not answer`);
      return;
    }
    if (r.ok) {
      this.primary = target;
      this.refusals.clear();
      this.note(`${target.name} is primary (epoch ${epoch})`);
    } else {
      this.refusals.set(target.name, r.reason);
      this.note(`promote ${target.name} refused: ${r.reason}`);
    }
  }

  /** A planned move or a self-fence: the application stops, the primary demotes (or is killed). */
  async stopPrimary(why: string): Promise<void> {
    const p = this.primary;
    if (!p?.proc?.device || this.busy) return;
    const device = p.proc.device;
    this.note(`stop primary ${p.name} (${why})`);
    this.busy = true;
    this.stopping = true;
    // As the agent does: the vserver stops and the filesystem is unmounted (writes in flight end,
    // a last flush), then the volume demotes; the guard kills whatever hangs past the limit.
    const end = this.clock.now() + DEMOTE_LIMIT_MS;
    while (this.model.inflight.size > 0 && this.clock.now() < end && p.proc?.device === device)
      await this.advance(10);
    const left = () => Math.max(0, end - this.clock.now());
    const flushed = await this.#within(
      device.flush().then(
        () => true,
        () => false,
      ),
      left(),
    );
    const done =
      flushed !== undefined &&
      (await this.#within(
        device.demote().then(() => true),
        left(),
      ));
    this.stopping = false;
    this.busy = false;
    if (p.proc?.device !== device) return;
    for (const b of this.model.inflight) this.model.uncertain.add(b);
    this.model.inflight.clear();
    if (flushed === false) {
      // The unmount's flush failed (quorum lost): the application was stopped without its unflushed
      // writes made durable anywhere, as in a crash of its machine, which is what a failover is to
      // it. Those writes may be lost (the next primary may be a replica that lost them in its own
      // power loss: `full` seed 83); flushed ones may not.
      this.model.crashed(p.name);
      this.note(`final flush on ${p.name} failed: its unflushed writes may be lost with the failover`);
    }
    if (!done) {
      this.count('guard-kill');
      this.note(`demote of ${p.name} hung: the guard kills it`);
      this.crash(p);
    }
    this.primary = undefined;
  }

  /**
   * The primary's agent hangs: its lease ends, the manager promotes another replica (a higher
   * epoch), while the old primary still runs and its application still writes, until the guard
   * kills it. The epochs must fence it: what it acknowledges meanwhile is kept, the rest refused.
   */
  async hungAgent(old: SimNode): Promise<void> {
    const others = this.dataNodes.filter((n) => n !== old && n.up && n.meta.diskState === 'UpToDate');
    const next = others[this.rand(others.length)];
    if (!next) return;
    this.count('hung-agent');
    this.note(
      `agent of ${old.name} hangs; ${next.name} is promoted while ${old.name} still runs (they cannot reach each other)`,
    );
    // The old primary cannot reach the new one (else the promotion is refused: a primary is up), but
    // may reach the others: what it sends them must be refused once they have seen the new epoch.
    this.net.partition([old.name], [next.name]);
    for (let i = 0; i < 3; i++) this.write(old);
    this.primary = undefined;
    await this.promote(next);
    for (let i = 0; i < 3; i++) this.write(old);
    // Its writes end (acknowledged, or failed once it is fenced or its links time out)...
    const end = this.clock.now() + 8000;
    while (this.model.inflight.size > 0 && this.clock.now() < end) await this.advance(20);
    // ...then the guard kills it.
    if (old.up) {
      const lost = old.crash(this.net);
      this.model.crashed(old.name);
      for (const b of this.model.inflight) this.model.uncertain.add(b);
      this.model.inflight.clear();
      this.note(`the guard kills ${old.name} (unsynced sectors lost: ${lost})`);
    }
    this.net.heal();
  }

  /** Runs the simulation until `p` settles or `ms` pass (undefined then). */
  async #within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
    let result: { v: T } | undefined;
    let failed: unknown;
    p.then(
      (v) => {
        result = { v };
      },
      (e) => {
        failed = e;
      },
    );
    const end = this.clock.now() + ms;
    while (!result && failed === undefined && this.clock.now() < end && !this.failure) {
      const due = this.clock.nextDue();
      if (due === undefined || due > end) {
        await this.advance(end - this.clock.now());
        break;
      }
      await this.advance(Math.max(0, due - this.clock.now()));
    }
    if (failed !== undefined) throw failed;
    return result?.v;
  }

  // ---- faults

  /**
   * The `ci` profile crashes a machine only when every other one is up and in sync with the primary
   * (one failure at a time, repaired before the next), a primary also with writes in flight or
   * acknowledged and unflushed (reconciliation.ts); `full` crashes any, any time.
   */
  mayCrash(): boolean {
    if (this.cfg.profile === 'full') return true;
    if (this.nodes.some((n) => !n.up)) return false;
    const p = this.primary?.proc?.device;
    if (!p) return false;
    const st = p.status();
    return st.peers.every((x) => x.connection === 'Connected' && x.outOfSyncBytes === 0);
  }

  /**
   * The primary loses power while its writes are on the wire: some peers may have applied a write
   * that others never got (none of them acknowledged). The survivors must end up identical.
   */
  async crashMidWrite(p: SimNode): Promise<void> {
    if (!this.mayCrash()) return;
    const n = 1 + this.rand(4);
    for (let i = 0; i < n; i++) this.write(p);
    await this.advance(this.pick() * 3);
    if (this.primary !== p || !p.up || !this.mayCrash()) return;
    this.count('crash-primary-mid-write');
    this.note(`crash ${p.name} with ${this.model.inflight.size} writes in flight`);
    this.crash(p);
  }

  async act(): Promise<void> {
    const r = this.pick() * 100;
    const alive = this.nodes.filter((n) => n.up);
    const down = this.nodes.filter((n) => !n.up);
    if (r < 40) this.write();
    else if (r < 50) this.flush();
    else if (r < 53 && alive.length > 0) {
      const n = alive[this.rand(alive.length)]!;
      if (!this.mayCrash()) return;
      this.count(
        this.primary === n ? 'crash-primary' : n.tiebreaker ? 'crash-tiebreaker' : 'crash-secondary',
      );
      this.crash(n);
    } else if (r < 53.75 && this.primary?.up && this.mayCrash()) {
      this.count('crash-primary');
      this.crash(this.primary);
    } else if (r < 54.5 && this.primary?.up) {
      await this.crashMidWrite(this.primary);
    } else if (r < 60) {
      // A machine that is down comes back (the weight of a restart is idle time when none is).
      const n = down[this.rand(down.length)];
      if (!n) return;
      this.count('restart');
      this.note(`restart ${n.name}`);
      await this.start(n);
    } else if (r < 63 && alive.length >= 2) {
      const a = alive[this.rand(alive.length)]!;
      const others = alive.filter((x) => x !== a);
      const b = others[this.rand(others.length)]!;
      this.count('link-cut');
      this.note(`cut ${a.name}-${b.name}`);
      this.net.cut(a.name, b.name);
    } else if (r < 69 && this.cfg.profile === 'ci') {
      // No partitions (nor heals) in this profile: idle time.
    } else if (r < 65 && !this.net.partitioned) {
      const side = this.nodes.filter(() => this.pick() < 0.5).map((n) => n.name);
      const rest = this.nodes.map((n) => n.name).filter((n) => !side.includes(n));
      if (side.length === 0 || rest.length === 0) return;
      this.count('partition');
      this.note(`partition [${side.join(',')}] | [${rest.join(',')}]`);
      this.net.partition(side, rest);
      // The primary's agent, cut from the majority of the cluster, fences it after its lease.
      if (this.primary && side.includes(this.primary.name) === side.length < rest.length)
        await this.stopPrimary('self-fence: cut from the cluster');
    } else if (r < 69 && this.net.partitioned) {
      this.count('heal');
      this.note('heal');
      this.net.heal();
    } else if (r < 70.5 && this.primary) {
      this.count('planned-move');
      await this.stopPrimary('planned move');
    } else if (
      r < 71 &&
      this.primary?.proc?.device &&
      !this.busy &&
      !this.net.partitioned &&
      this.cfg.profile === 'full'
    ) {
      // Outside the cluster's timing rules (its guard kills a hung agent's primary before the lease
      // ends): the epochs alone against a primary that still runs. Full profile only (open issue 3).
      await this.hungAgent(this.primary);
    } else if (r < 72 && this.primary) {
      this.count('verify');
      const peers = this.dataNodes.filter((n) => n !== this.primary && n.up);
      const peer = peers[this.rand(peers.length)];
      if (peer && this.primary.proc?.device) {
        this.note(`verify ${this.primary.name} against ${peer.name}`);
        void this.primary.proc.device.verify(peer.name).catch(() => undefined);
      }
    } else if (!this.primary && r < 85) {
      await this.promote();
    }
  }

  async run(): Promise<SimResult> {
    const onUnhandled = (err: unknown) => {
      this.failure ??= { kind: 'unhandled rejection', detail: String((err as Error)?.stack ?? err) };
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      for (const n of this.nodes) await this.start(n);
      await this.promote();
      for (this.step = 1; this.step <= this.cfg.steps && !this.failure; this.step++) {
        await this.act();
        const long = this.pick() < 0.05;
        await this.advance(long ? 500 + this.pick() * 7000 : this.pick() * 40);
        this.report();
        this.failure ??= check(this);
      }
      if (!this.failure) await this.settle();
    } finally {
      process.off('unhandledRejection', onUnhandled);
      for (const n of this.nodes) n.crash(this.net);
    }
    return {
      config: this.cfg,
      steps: Math.min(this.step, this.cfg.steps),
      simulatedMs: this.clock.now() - 1_700_000_000_000,
      violation: this.failure,
      trace: this.trace,
      log: this.log,
      faults: this.faults,
      ...(this.stuck ? { stuck: this.stuck } : {}),
    };
  }

  /**
   * Why no replica became primary in the settle: per replica, the engine's refusal (another replica
   * holds newer or diverged data, or no quorum) or why the manager does not try it (a disk not
   * UpToDate). `stated` when every replica was refused or not eligible.
   */
  whyNoPrimary(): { stated: boolean; reason: string } {
    const parts: string[] = [];
    let stated = true;
    for (const n of this.dataNodes) {
      const refused = this.refusals.get(n.name);
      if (!n.up) {
        parts.push(`${n.name} down`);
        stated = false;
      } else if (refused) parts.push(`${n.name} refused: ${refused}`);
      else if (n.meta.diskState !== 'UpToDate')
        parts.push(`${n.name} not tried (its disk is ${n.meta.diskState})`);
      else {
        parts.push(`${n.name} neither promoted nor refused (its promotion did not answer)`);
        stated = false;
      }
    }
    const reason = `no replica may be promoted: ${parts.join('; ')}`;
    return { stated: stated && this.refusals.size > 0, reason };
  }

  /** The end: every fault repaired; the replicas must converge to identical data. */
  async settle(): Promise<void> {
    this.note('settle: heal, restart all, promote');
    this.net.heal();
    for (const n of this.nodes) if (!n.up) await this.start(n);
    this.refusals.clear();
    // As the manager does: every eligible replica in turn (a refused one is marked behind), 5 rounds;
    // the ones the last primary reported in sync first, then any other whose own disk says UpToDate
    // (the manager's rule: every node is up and reachable now, so the engine's refusal over a newer
    // or diverged peer is complete).
    for (let i = 0; i < 5 && !this.primary; i++) {
      await this.advance(2000);
      const up = this.dataNodes.filter((x) => x.up && x.meta.diskState === 'UpToDate');
      const order = [
        ...up.filter((x) => this.inSync.has(x.name)),
        ...up.filter((x) => !this.inSync.has(x.name)),
      ];
      for (const n of order) {
        if (this.primary) break;
        await this.promote(n);
      }
    }
    if (!this.primary) {
      const why = this.whyNoPrimary();
      // ci counts every such end (as before); full fails one whose reason is not an engine refusal.
      if (why.stated || this.cfg.profile === 'ci') {
        // Every replica up refuses for a reason the engine states, as a real cluster's would (the
        // manager tries each UpToDate replica; its agent marks a refused one behind): safe, counted.
        this.count('stuck-without-primary');
        this.stuck = why.reason;
        this.note(`no primary after settling: ${why.reason}`);
        return;
      }
      this.failure = { kind: 'did not converge', detail: `no primary after settling: ${why.reason}` };
      return;
    }
    await this.advance(30_000);
    this.flush();
    await this.advance(5_000);
    this.report();
    this.failure ??= check(this);
    if (this.failure) return;
    this.failure = check(this, { converged: true });
  }
}
