/**
 * The node agent: the loops around the pure steps.
 *   lease loop (every `loop_interval`): renew -> nodeStep with the renewal's send time -> guard's deadline;
 *   fence timer: nodeStep at the fence time itself, whatever else is running;
 *   main round (woken by etcd's watch or a finished action, else every second, every loop turn while a
 *   vserver settles): read the cluster -> observe local resources -> nodeStep -> actions to the
 *   executor (a worker thread) -> replicas -> report -> if this node is the manager: step(), store it.
 * Time for fencing is this process's monotonic clock; wall-clock time only labels reports and events.
 */
import { createHash } from 'node:crypto';
import { existsSync, type FSWatcher, mkdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { type FoundVserver, planAdoption } from '../cluster/adoption.ts';
import { applyCommands } from '../cluster/assignments.ts';
import {
  type ClusterSpec,
  managerPolicy,
  type NodeSpec,
  parseClusterConfig,
  type Timing,
  timingOf,
  type VserverSpec,
  votingNodes,
  withoutRemoved,
  withRetired,
} from '../cluster/config.ts';
import { emptyState, step } from '../cluster/manager.ts';
import { emptyLocal, isActive, type NodeEvent, type NodeLocal, nodeStep } from '../cluster/node.ts';
import type { ManagerState, Report } from '../cluster/types.ts';
import { type Clock, monotonicClock, systemClock, type TimerHandle } from '../lib/clock.ts';
import { errorMessage, UserError } from '../lib/errors.ts';
import { readJsonOr, writeFileAtomic, writeJsonAtomic } from '../lib/json-file.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { BEHIND_REFUSAL } from '../volume/replication/handshake.ts';
import { BackupScheduler } from './backups.ts'; // scheduled backups (docs/backup.md)
import { loadNodeCredentials } from './credentials.ts';
import { EtcdClient } from './etcd/client.ts';
import { EtcdMember } from './etcd/member.ts';
import { ActionExecutor } from './executor.ts';
import { EXIT_NEEDS_OPERATOR } from './exit-status.ts';
import { AGENT_FORMATS, clusterGate, decideFormat, type FormatDecision, formatsOf } from './format.ts';
import { GuardClient, spawnGuard } from './guard.ts';
import { leaderMove } from './leader-placement.ts';
import { initialClusterForJoin, promoteWhenCaughtUp } from './membership/join.ts';
import { type MeshHandle, startMesh } from './mesh/start.ts';
import { observeCluster } from './observation.ts';
import {
  type EventRecord,
  type NodeReport,
  RECORD_VERSION,
  type ReplicaReport,
  type VserverReport,
} from './records.ts';
import { followPeers, releaseAllReplicas } from './resources/replica-peers.ts';
import { replicaPlan, replicaRoleOf } from './resources/replica-plan.ts';
import {
  createNodeResources,
  type NodeResources,
  type ReplicaContext,
  type ResourceObservation,
} from './resources.ts';
import { ThreadedResources } from './resources-thread.ts';
import { agentStatusLine, serviceManager } from './service-manager.ts'; // systemd: READY, WATCHDOG, STOPPING
import { ClusterStore, type Snapshot } from './store.ts';

export const AGENT_VERSION = '0.2.0';
/** How many of the newest events the cluster keeps (the manager trims the rest once a minute). */
export const EVENTS_KEPT = 2000;
/**
 * The main round's period when nothing wakes it: changes in etcd (the watch) and finished actions start a
 * round at once; renewals and the fence have their own loop and timer. Each round reads the cluster
 * from etcd: an idle cluster needs that only as a safety net under the watch.
 */
const ROUND_PERIOD_S = 2;
/** A vserver running but not healthy yet is watched every SETTLE_FAST_PERIOD_S for this long. */
const SETTLE_FAST_S = 10;
const SETTLE_FAST_PERIOD_S = 0.1;
/** The manager acts only on a snapshot read this recently. */
const SNAPSHOT_FRESH_MS = ROUND_PERIOD_S * 2500;
/** How often the manager checks where etcd's leader is. */
const LEADER_CHECK_MS = 5000;
/** An observation slower than this is skipped for the round (a volume daemon busy with a role change). */
const OBSERVE_TIMEOUT_MS = 1000;
/** The resource worker ends after this long unused (it is ~40 MiB); warmed again by cluster changes. */
const RESOURCE_WORKER_IDLE_MS = 15_000;

export interface AgentOptions {
  /** The bootstrap configuration (nodes, etcd, timing, credentials); vservers come from what `apply` stored. */
  configFile: string;
  node: string;
  stateDir: string;
  /**
   * This node joins a running cluster (`cvserver node add` made its etcd member a learner): a member
   * without data starts with the cluster's current members and `--initial-cluster-state existing`.
   */
  join?: boolean;
}

export interface AgentPaths {
  runDir: string;
  socket: string;
  pidFile: string;
  etcdDir: string;
  etcdLog: string;
  /** The last applied cluster.yaml seen in the store (used at start, before etcd answers). */
  appliedCopy: string;
  /** The lease this node holds, for an agent that starts again while it is still valid. */
  leaseFile: string;
}

export function agentPaths(stateDir: string): AgentPaths {
  const runDir = join(stateDir, 'run');
  return {
    runDir,
    socket: join(runDir, 'agent.sock'),
    pidFile: join(runDir, 'agent.pid'),
    etcdDir: join(stateDir, 'etcd'),
    etcdLog: join(stateDir, 'etcd.log'),
    appliedCopy: join(stateDir, 'cluster.applied.yaml'),
    leaseFile: join(runDir, 'lease.json'),
  };
}

/**
 * The agent's time: `wall` for what other nodes compare (records, the manager's step), `monotonic`
 * (the clock the guard reads) for the lease, fencing and the loop's periods. A simulation passes its own.
 */
export interface AgentClocks {
  wall: Clock;
  monotonic: Clock;
}
const SYSTEM_CLOCKS: AgentClocks = { wall: systemClock, monotonic: monotonicClock };

/** The volume's UUID: the same on every replica, derived from the cluster's and the vserver's names. */
export function volumeUuid(cluster: string, vserver: string): string {
  const h = createHash('sha256').update(`cvserver\0${cluster}\0${vserver}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export function etcdEndpoints(spec: ClusterSpec, node: string): string[] {
  if (spec.etcd.endpoints.length) return spec.etcd.endpoints;
  const port = spec.etcd.client_port;
  const others = spec.nodes.filter((n) => n.name !== node).map((n) => `https://${n.addresses[0]}:${port}`);
  return [`https://127.0.0.1:${port}`, ...others];
}

/** What `cvserver status` shows; the agent's last view of the cluster plus its own state. */
export interface AgentView {
  node: string;
  spec: ClusterSpec;
  snapshot: Snapshot | undefined;
  snapshotAgeMs: number | null;
  local: NodeLocal;
  leaseId: string | null;
  leaseValidFor: number | null;
  timing: Timing;
  isManager: boolean;
  lastError: string;
  /** Why this agent does not act on the cluster (format.ts's gate), '' when it does. */
  refusal: string;
}

export class Agent {
  readonly o: AgentOptions;
  readonly paths: AgentPaths;
  readonly log: Logger;
  /** The bootstrap spec (from the file); `spec` is the applied one once read from the store. */
  readonly boot: ClusterSpec;
  spec: ClusterSpec;
  /** The stored spec as applied, the nodes `node remove` took out still in it (src/agent/membership/). */
  stored: ClusterSpec;
  #specRevision = -1;
  readonly timing: Timing;
  readonly me: NodeSpec;
  /** Starts, stops and replica upkeep: mostly synchronous work (mkfs, crun, ip), on a worker thread. */
  readonly resources: ThreadedResources;
  /** Observations: file reads and asynchronous calls only, on this thread. */
  /**
   * On the main thread: observations, and stops — a stop is a few short crun calls and asynchronous
   * volume work, and must not wait for the worker to load (a migration's first step, a fence).
   */
  readonly #inline: Pick<NodeResources, 'observe' | 'observeRunning' | 'stop'>;
  readonly executor: ActionExecutor;
  /** Scheduled backups (docs/backup.md): runs due here, as child processes. */
  readonly backups: BackupScheduler;
  store!: ClusterStore;
  #member: EtcdMember | undefined;
  #guard: GuardClient | undefined;
  #server: Server | undefined;
  #http: { close(): Promise<void> } | undefined; // issue 13: HTTP API, dashboard, /metrics (src/agent/http/)
  local: NodeLocal;
  #lease: string | null = null;
  snapshot: Snapshot | undefined;
  #snapshotAt = 0;
  #lastReport = '';
  #lastReportAt = 0;
  #replicas: Record<string, ReplicaReport> = {};
  #replicasAt = 0;
  #replicasBusy = false;
  #ensured = new Map<string, string>();
  #managerState: ManagerState | undefined;
  #isManager = false;
  #pendingEvents: { key: string; record: EventRecord }[] = [];
  #stopping = false;
  #lastError = '';
  /** The last problem of the round in progress ('' when none): `status` shows the last round's. */
  #roundError = '';
  #wallOffset: number;
  #wake: (() => void) | undefined;
  #fenceTimer: TimerHandle | undefined;
  readonly #clocks: AgentClocks;
  readonly #startedAt = Date.now(); // uptime shown in `status`
  #trimmedAt = 0;
  #guardSent = '';
  #watch: { close(): void } | undefined;
  /** A change arrived while a round ran: the next round starts at once. */
  #dirty = false;
  /** runtime.json of the vservers just started (`#watchHealth`). */
  readonly #healthWatch = new Map<string, FSWatcher>();
  #leaderAt = 0;
  /** The nodes running vservers at the last placement check ('' when this node was not the manager). */
  #leaderWhere = '';
  #leaderBusy = false;
  /** Vservers whose replica here was refused promotion (a peer has newer data), with that epoch. */
  readonly #behind = new Map<string, number>();
  /** The membership mesh (src/agent/mesh/): heartbeats on every link, for `status` and `links`. */
  mesh: MeshHandle | undefined;
  /** Why this agent does not act on the cluster now (format.ts's gate), '' when it does. */
  #refusal = '';
  /** This agent has acted on the cluster since it started (a later unknown format: it stays, idle). */
  #actedOnce = false;
  /** Who removed this node from the cluster (`node remove`): it stands down and exits. */
  #removedBy = '';
  /** The cluster's format, unknown to this agent, found before it ever acted: it exits. */
  #refusedAtStart = '';

  constructor(o: AgentOptions, clocks: AgentClocks = SYSTEM_CLOCKS) {
    this.o = o;
    this.#clocks = clocks;
    this.paths = agentPaths(o.stateDir);
    this.boot = parseClusterConfig(readFileSync(o.configFile, 'utf8'), o.configFile);
    const me = this.boot.nodes.find((n) => n.name === o.node);
    if (!me)
      throw new UserError(
        `--node: "${o.node}" is not a node of ${o.configFile} (nodes: ${this.boot.nodes.map((n) => n.name).join(', ')})`,
      );
    this.me = me;
    this.spec = this.#lastApplied() ?? this.boot;
    this.stored = this.spec;
    this.timing = timingOf(this.boot);
    this.log = createLogger('agent', { node: o.node });
    // The worker is loaded only while there is work, and warmed by any change in the cluster (below).
    this.resources = new ThreadedResources(o.stateDir, o.node, RESOURCE_WORKER_IDLE_MS);
    this.#inline = createNodeResources({ stateDir: o.stateDir, log: this.log });
    this.executor = new ActionExecutor(
      {
        start: (v, epoch, reason) => this.#start(v, epoch, reason),
        restart: async (v, epoch, reason) => {
          await this.resources.stopContainerOnly(this.#vspec(v), `restart: ${reason}`);
          await this.#start(v, epoch, reason);
        },
        stop: (v, hard, reason) => this.#inline.stop(this.#vspec(v), hard, reason),
      },
      { onOutcome: () => this.#wake?.() },
    );
    this.local = emptyLocal(o.node);
    this.backups = new BackupScheduler({
      node: o.node,
      stateDir: o.stateDir,
      configFile: this.paths.appliedCopy,
      store: () => this.store,
      event: (text) => this.#event('agent', text),
      log: this.log,
    }); // scheduled backups
    this.#wallOffset = this.#now() / 1000 - this.#monoSeconds();
    // A replica notices a dead peer (no RST after a power cut) only by silence. The cluster moves a
    // vserver once the old node's lease has ended, and the new primary may not be promoted while it
    // still thinks the old one is connected: so its volume daemons give up on a silent peer within
    // the lease TTL (unless set by the operator).
    process.env.CVSERVER_PEER_TIMEOUT_MS ??= String(Math.round(this.timing.leaseTtl * 800));
  }

  /** Wall time, ms: what other nodes compare (records, the manager's step). */
  #now(): number {
    return this.#clocks.wall.now();
  }

  /** Seconds on the monotonic clock (the guard's deadlines are in its ms). */
  #monoSeconds(): number {
    return this.#clocks.monotonic.now() / 1000;
  }

  #lastApplied(): ClusterSpec | undefined {
    try {
      return parseClusterConfig(readFileSync(this.paths.appliedCopy, 'utf8'), this.paths.appliedCopy);
    } catch {
      return undefined;
    }
  }

  #vspec(name: string) {
    const v = this.spec.vservers[name];
    if (!v) throw new Error(`vserver ${name} is not in the applied configuration`);
    return v;
  }

  #replicaContext(vserver: string): ReplicaContext {
    return {
      cluster: this.spec,
      node: this.o.node,
      uuid: volumeUuid(this.spec.cluster, vserver),
      blank: !this.snapshot?.initialized.has(vserver),
      secretFile: this.spec.secret_file,
      downPeers: this.snapshot
        ? this.spec.nodes.map((n) => n.name).filter((n) => n !== this.o.node && !this.snapshot?.nodes[n])
        : [],
    };
  }

  async #start(vserver: string, epoch: number, _reason: string): Promise<void> {
    const spec = this.#vspec(vserver);
    const ctx = this.#replicaContext(vserver);
    if (ctx.blank) {
      // From now on a replica created elsewhere must take a full sync, not start blank.
      await this.store.markInitialized(vserver, this.#ms(this.timing.renewTimeout * 2));
    }
    try {
      await this.resources.start(spec, epoch, ctx);
    } catch (err) {
      // The volume refused: a reachable peer has newer data, or witnessed it. This replica's own disk state still says
      // UpToDate, so it is reported behind until a newer epoch runs elsewhere (whose primary resyncs it):
      // else the manager would pick this node again and again.
      if (BEHIND_REFUSAL.test(errorMessage(err))) {
        this.#behind.set(vserver, epoch);
        this.#event(
          'agent',
          `${vserver}: this replica is behind a peer: reported not up to date until a newer copy runs elsewhere`,
        );
      }
      throw err;
    }
  }

  #ms(seconds: number): number {
    return Math.round(seconds * 1000);
  }

  /** Starts everything around the loop, then runs it until `stop()`. */
  async run(): Promise<void> {
    const p = this.paths;
    mkdirSync(p.runDir, { recursive: true });
    writeFileSync(p.pidFile, `${process.pid}\n`);
    this.log.info({ event: 'agent-start', version: AGENT_VERSION, pid: process.pid }, 'agent starting');
    await spawnGuard(this.o.stateDir);
    this.#guard = new GuardClient(this.o.stateDir);
    const creds = loadNodeCredentials(this.boot.tls_dir, this.o.node);
    // The membership mesh: visibility only (fencing rests on the lease), so it starts first and alone.
    this.mesh = startMesh({
      spec: this.boot,
      node: this.o.node,
      stateDir: this.o.stateDir,
      log: this.log,
      record: (text) => this.#event('agent', text),
      clock: this.#clocks.monotonic,
      gridClock: this.#clocks.wall,
      leaseAlive: (peer) => (this.snapshot ? this.snapshot.nodes[peer] !== undefined : undefined),
      // The mesh hears a power cut about a second before the lease ends: the resource worker loads
      // meanwhile, so a start that follows here does not wait for it (it ends again when unused).
      peerLost: () => this.resources.warm(),
    });
    const client = new EtcdClient({
      endpoints: etcdEndpoints(this.boot, this.o.node),
      ...creds,
      timeoutMs: this.#ms(this.timing.renewTimeout),
      // Its own member first (etcdEndpoints): back to it when it serves again after a start or failure.
      preferFirst: this.boot.etcd.endpoints.length === 0,
    });
    if (this.boot.etcd.endpoints.length === 0) await this.#startMember(client);
    this.store = new ClusterStore(client, this.boot.cluster, this.o.node, this.#clocks.wall);
    await this.#refuseUnknownFormat(); // rolling upgrade: a format this agent does not know (format.ts)
    // An earlier agent's lease, renewed before anything slow: the guard's deadline is running.
    const continued = await this.#continueLease();
    // What a previous life of this node left (power cut, crash) and no live daemon holds is cleared.
    await this.resources.cleanupStale();
    await this.#adoptOrStopLeftovers(continued);
    void this.#leaseLoop();
    // A change in the cluster (an assignment, a lease gone, a report, a request) starts a round at once
    // instead of at the next tick; the cluster's log is not news.
    const events = this.store.keys.events;
    const nodes = this.store.keys.node('');
    this.#watch = client.watch(this.store.keys.prefix, (keys) => {
      if (!keys.some((k) => !k.startsWith(events))) return;
      // A lease gone: this node may take over its vservers at once (a planned move: `#warmForMove`).
      if (keys.some((k) => k.startsWith(nodes))) this.resources.warm();
      this.#dirty = true;
      this.#wake?.();
    });
    const { serveAgentApi } = await import('./api.ts');
    this.#server = await serveAgentApi(this);
    this.#http = await (await import('./http/server.ts')).startHttpServer(this); // issue 13 (docs/http.md)
    serviceManager.ready(`agent ${AGENT_VERSION} up on ${this.o.node}`); // systemd (docs/agent.md)
    this.#event('agent', `agent ${AGENT_VERSION} started (pid ${process.pid})`);
    while (!this.#stopping) {
      serviceManager.watchdog(agentStatusLine(this.local, this.#lastError)); // systemd: a hung loop stops these
      const began = this.#monoSeconds();
      try {
        this.#roundError = '';
        await this.round();
        this.#lastError = this.#roundError;
      } catch (err) {
        this.#lastError = errorMessage(err);
        this.log.error({ err: this.#lastError }, 'round failed');
      }
      if (this.#refusedAtStart) await this.#exitRefused(this.#refusedAtStart); // format.ts
      if (this.#removedBy) await this.#standDown(this.#removedBy); // node remove (docs/agent.md)
      // A vserver on its way up (started, not yet healthy) is watched every loop turn: its health
      // is news the manager and a waiting migrate are after.
      const settling = Object.values(this.local.vservers).filter(
        (x) => x.status === 'running' || x.status === 'starting',
      );
      // Just started, not healthy yet: its first passing check ends a failover or a migration, so it
      // is looked for often, for a while (the check's state is a file the supervisor writes).
      const freshNames = Object.entries(this.local.vservers)
        .filter(([, x]) => x.status === 'running' && this.#monoSeconds() - x.since < SETTLE_FAST_S)
        .map(([v]) => v);
      const fresh = freshNames.length > 0;
      this.#watchHealth(freshNames);
      const period = fresh
        ? Math.min(this.timing.loopInterval, SETTLE_FAST_PERIOD_S)
        : settling.length
          ? this.timing.loopInterval
          : Math.max(this.timing.loopInterval, ROUND_PERIOD_S);
      const wait = this.#dirty ? 0 : Math.max(0, period - (this.#monoSeconds() - began));
      this.#dirty = false;
      await new Promise<void>((resolve) => {
        const t = this.#clocks.monotonic.setTimer(resolve, wait * 1000);
        // An action that finished wakes the loop early (a start's outcome is reported at once).
        this.#wake = () => {
          t.cancel();
          this.#clocks.monotonic.setTimer(resolve, 20);
        };
      });
      this.#wake = undefined;
    }
  }

  /**
   * The vservers just started: the supervisor writes a check's first pass into their runtime.json, and
   * that change wakes the loop at once (the loop's fast turns remain as the safety net).
   */
  #watchHealth(vservers: string[]): void {
    for (const [v, w] of this.#healthWatch)
      if (!vservers.includes(v)) {
        w.close();
        this.#healthWatch.delete(v);
      }
    for (const v of vservers) {
      if (this.#healthWatch.has(v)) continue;
      try {
        const w = watch(join(this.o.stateDir, 'vservers', v), (_event, file) => {
          if (file !== 'runtime.json') return;
          this.#dirty = true;
          this.#wake?.();
        });
        w.on('error', () => w.close());
        this.#healthWatch.set(v, w);
      } catch {
        // No directory to watch: the loop's fast turns find the health.
      }
    }
  }

  async #startMember(client: EtcdClient): Promise<void> {
    const spec = this.boot;
    const addr = this.me.addresses[0]!;
    const tls = {
      ca: join(spec.tls_dir, 'ca.crt'),
      cert: join(spec.tls_dir, `${this.o.node}.crt`),
      key: join(spec.tls_dir, `${this.o.node}.key`),
    };
    const peer = (n: NodeSpec) => `https://${n.addresses[0]}:${spec.etcd.peer_port}`;
    let initialCluster = votingNodes(spec).map((name) => ({
      name,
      peerUrl: peer(spec.nodes.find((n) => n.name === name)!),
    }));
    // Joining (docs/agent.md, membership): the members the cluster has now, asked of the others.
    const joining = !!this.o.join && !existsSync(join(this.paths.etcdDir, 'member'));
    if (joining) {
      const found = await initialClusterForJoin(
        client,
        this.o.node,
        peer(this.me),
        () => this.#stopping,
        (what) => this.#note(what),
      );
      if (!found) return;
      initialCluster = found;
      this.#event(
        'agent',
        `joining the cluster: etcd member starts beside ${found.map((m) => m.name).join(', ')}`,
      );
    }
    this.#member = new EtcdMember({
      name: this.o.node,
      dataDir: this.paths.etcdDir,
      peerUrl: peer(this.me),
      clientUrls: [`https://${addr}:${spec.etcd.client_port}`, `https://127.0.0.1:${spec.etcd.client_port}`],
      initialCluster,
      join: joining,
      tls,
      logFile: this.paths.etcdLog,
      clusterToken: `cvserver-${spec.cluster}`,
      heartbeatMs: spec.etcd.heartbeat_ms,
      electionMs: spec.etcd.election_ms,
      logger: this.log,
    });
    this.#member.start();
    // A learner until it has caught up: then a voter (after a `node add`, or an agent restarted meanwhile).
    void promoteWhenCaughtUp(
      client,
      peer(this.me),
      () => this.#stopping,
      (what) => this.#note(what),
      () => this.#event('agent', `etcd member ${this.o.node} promoted from learner to voter`),
    );
  }

  /**
   * The lease an earlier agent of this node held (run/lease.json), renewed at once: if etcd acknowledges
   * it, nothing can have been moved away from this node, and the guard gets a new deadline from this
   * renewal for the containers that run, before it fences them. Returns the renewal's send time.
   */
  async #continueLease(): Promise<number | undefined> {
    const saved = readJsonOr<{ node?: unknown; lease?: unknown }>(this.paths.leaseFile);
    const lease = saved?.node === this.o.node && typeof saved.lease === 'string' ? saved.lease : null;
    if (!lease) return undefined;
    const running: string[] = [];
    for (const v of Object.values(this.spec.vservers)) {
      const o = await this.#inline.observeRunning(v).catch(() => undefined);
      if (o?.container === 'running') running.push(v.name);
    }
    // The local etcd member is only starting: the client goes to the other members meanwhile, and
    // its first connections (TLS) can be slow on a loaded machine. Worth trying for as long as the
    // lease could still be valid: at most a TTL from now.
    const until = this.#monoSeconds() + this.timing.leaseTtl;
    while (this.#monoSeconds() < until) {
      const sentAt = this.#monoSeconds();
      try {
        const ttl = (
          await this.store.client.leaseKeepAlive(lease, {
            timeoutMs: this.#ms(Math.max(this.timing.renewTimeout, 1)),
          })
        ).ttl;
        if (ttl <= 0) break;
        this.#lease = lease;
        const deadline = Math.floor((sentAt + this.timing.guardDeadline) * 1000);
        this.#guard?.send({ deadline, protect: { containers: running, volumes: running } });
        this.#event('agent', `lease ${lease} of an earlier agent still valid: continued`);
        return sentAt;
      } catch (err) {
        this.#note(`renewal of the earlier lease failed: ${errorMessage(err)}`);
        await this.#clocks.monotonic.sleep(100);
      }
    }
    rmSync(this.paths.leaseFile, { force: true });
    return undefined;
  }

  /**
   * What an earlier agent left running here: kept if its lease was continued and the table still gives
   * it here with the same epoch (src/cluster/adoption.ts), else stopped hard: nothing runs unowned.
   */
  async #adoptOrStopLeftovers(renewedAt: number | undefined): Promise<void> {
    const found: FoundVserver[] = [];
    for (const v of Object.values(this.spec.vservers)) {
      // No time limit here: a leftover must not be missed.
      const o = await this.#inline.observe(v).catch(() => undefined);
      if (!o) continue;
      found.push({
        vserver: v.name,
        running: o.container === 'running' || o.container === 'created' || o.container === 'paused',
        primary: o.volume.role === 'primary',
        epoch: o.volume.epoch,
        healthy: o.health === 'healthy' || o.health === 'none',
      });
    }
    const leaseValid = renewedAt !== undefined && this.#lease !== null;
    const table = leaseValid
      ? ((await this.#read(this.#ms(this.timing.renewTimeout)))?.state?.table ?? null)
      : null;
    const plan = planAdoption(this.o.node, found, table, leaseValid, this.#monoSeconds());
    for (const line of plan.log) this.#event('agent', line);
    if (leaseValid && this.#lease) {
      this.local = { ...this.local, vservers: plan.vservers };
      this.#decide([
        { kind: 'renewed', sentAt: renewedAt },
        ...(table ? [{ kind: 'assignments' as const, table }] : []),
      ]);
      await this.#putNode(this.#lease, this.#ms(this.timing.renewTimeout)).catch(() => undefined);
    }
    for (const { vserver, reason } of plan.stop) {
      const spec = this.spec.vservers[vserver];
      if (!spec) continue;
      await this.#inline
        .stop(spec, true, reason)
        .catch((err: unknown) =>
          this.log.error({ vserver, err: errorMessage(err) }, 'could not stop a leftover'),
        );
    }
  }

  async stop(): Promise<void> {
    serviceManager.stopping('stopping (the guard keeps fencing on the last deadline)'); // systemd
    this.#stopping = true;
    this.#fenceTimer?.cancel();
    this.#watch?.close();
    this.#watchHealth([]);
    this.#wake?.();
    this.#server?.close();
    await this.#http?.close(); // issue 13
    this.#guard?.close();
    this.mesh?.close();
    this.backups.close(); // backups in progress finish on their own
    await this.#member?.stop();
    await this.resources.close();
  }

  /**
   * The lease on its own loop: nothing else the agent does (reading the cluster, observing, the
   * manager) can delay a renewal, and each outcome goes to the node step at once.
   */
  async #leaseLoop(): Promise<void> {
    while (!this.#stopping) {
      const began = this.#monoSeconds();
      const events = await this.#renew(this.#ms(this.timing.renewTimeout));
      if (events.length) this.#decide(events);
      const wait = Math.max(0, this.timing.loopInterval - (this.#monoSeconds() - began));
      await this.#clocks.monotonic.sleep(wait * 1000);
    }
  }

  /** One round of the loop (the lease has its own). */
  async round(): Promise<void> {
    const snapshot = await this.#read(this.#ms(this.timing.renewTimeout));
    const removed = snapshot?.config?.removed[this.o.node];
    if (removed) {
      this.#removedBy = removed.by; // the loop stands down (membership)
      return;
    }
    // The gate (format.ts): no assignments and no manager step from a cluster this agent cannot read.
    const acting = snapshot ? await this.#gate(snapshot) : this.#refusal === '';
    const events: NodeEvent[] = [];
    if (snapshot && acting) this.#warmForMove(snapshot);
    if (snapshot && acting) events.push({ kind: 'assignments', table: snapshot.state?.table ?? {} });
    events.push(...(await this.#observeLocal()));
    const reports = this.#decide(events);
    this.#ensureReplicas();
    await this.#publishReport(reports);
    if (acting) await this.#manage();
    // Scheduled backups (docs/backup.md): starts what is due here, never waits for a run.
    if (acting)
      this.backups.tick({
        spec: this.spec,
        snapshot,
        local: this.local,
        lease: this.#lease,
        isManager: this.#isManager,
        timeoutMs: this.#ms(this.timing.renewTimeout),
      });
    await this.#flushEvents();
  }

  /**
   * A vserver may be on its way here (a migration requested to this node; the manager stopping it
   * elsewhere to move it here, or to move it without a target yet: standby, relocation): the resource
   * worker loads while the other node stops it, not after. Not on the node that stops it, nor on
   * the others when the move has its target: loading it on every node at once took CPU from the stop.
   */
  #warmForMove(snap: Snapshot): void {
    const me = this.o.node;
    const requested = snap.requests.some(
      (r) => r.record.event.kind === 'migrate' && r.record.event.node === me,
    );
    const coming = Object.values(snap.state?.state.vservers ?? {}).some(
      ({ stopping: s }) => s && s.node !== me && s.why !== 'desired' && (s.target ?? me) === me,
    );
    if (requested || coming) this.resources.warm();
  }

  // --- Rolling upgrade: the cluster's stored format (format.ts) ---

  #formatDecision(snap: Snapshot): FormatDecision {
    return decideFormat(snap.format?.format, {
      cluster: this.boot.cluster,
      agentVersion: AGENT_VERSION,
      mine: AGENT_FORMATS,
      live: Object.values(snap.nodes).map(formatsOf),
    });
  }

  /**
   * At start, before anything is done to the cluster or this node: a stored format this agent does not
   * know ends it with one line. One read only (a restarted agent must renew its lease soon); when etcd
   * does not answer yet, the first round whose read is answered decides the same (`#gate`).
   */
  async #refuseUnknownFormat(): Promise<void> {
    let snap: Snapshot;
    try {
      snap = await this.store.snapshot(this.#ms(this.timing.renewTimeout));
    } catch {
      return;
    }
    const d = this.#formatDecision(snap);
    if (d.kind === 'refuse') await this.#exitRefused(d.reason);
  }

  /**
   * This node was removed from the cluster (`cvserver node remove`, which moved its vservers off
   * first): whatever still runs here stops, its replicas go down (their data stays on disk), its lease
   * is revoked, its etcd member stops, and the agent exits. It never acts on the cluster again: it
   * joins only as a new member (`node add`, a fresh state dir, `--initial-cluster-state existing`).
   */
  async #standDown(by: string): Promise<never> {
    const reason = `${this.o.node} was removed from the cluster by ${by}`;
    this.#event('agent', `${reason}: its agent stands down (vservers stopped, volumes down, lease revoked)`);
    for (const [v, x] of Object.entries(this.local.vservers))
      if (isActive(x.status) && this.stored.vservers[v])
        await this.#inline.stop(this.stored.vservers[v], false, reason).catch(() => undefined);
    await releaseAllReplicas(this.o.stateDir, this.log).catch((err: unknown) =>
      this.log.error({ err: errorMessage(err) }, 'volumes not all down'),
    );
    if (this.#lease) await this.store.client.leaseRevoke(this.#lease).catch(() => undefined);
    rmSync(this.paths.leaseFile, { force: true });
    await this.#flushEventsBeforeExit();
    await this.stop();
    throw new UserError(
      `${reason}: this agent exits (to join again: cvserver node add ${this.o.node} --address ${this.me.addresses.join(',')} on a node of the cluster, then start this agent with an empty state dir and --initial-cluster-state existing)`,
      EXIT_NEEDS_OPERATOR,
    );
  }

  async #exitRefused(reason: string): Promise<never> {
    this.log.error({ event: 'format' }, reason);
    this.#event('agent', `agent ${AGENT_VERSION} exits: ${reason}`);
    await this.#flushEventsBeforeExit();
    await this.stop();
    throw new UserError(reason, EXIT_NEEDS_OPERATOR);
  }

  /**
   * Whether this agent acts this round. When it may not, it says so once (event, status), gives up the
   * manager's key if it holds it, and keeps its lease and what runs. When it may: the format record is
   * written if missing, and raised by the manager when every live agent supports a higher format.
   */
  async #gate(snap: Snapshot): Promise<boolean> {
    const format = this.#formatDecision(snap);
    const gate = clusterGate(format, snap.stateProblem);
    // The start check's read may not have been answered: the first read that is decides the same way.
    if (format.kind === 'refuse' && !this.#actedOnce) {
      this.#refusedAtStart = format.reason;
      return false;
    }
    if (gate.act) this.#actedOnce = true;
    const reason = gate.act ? '' : gate.reason;
    if (reason !== this.#refusal) {
      this.#event(
        'agent',
        reason
          ? `this agent stops acting on the cluster (no manager step, no new assignments; it keeps its lease and what runs): ${reason}`
          : 'this agent acts on the cluster again',
      );
      this.#refusal = reason;
    }
    const lease = this.#lease;
    const timeoutMs = this.#ms(this.timing.renewTimeout);
    const managing = lease !== null && snap.manager?.node === this.o.node && snap.manager.lease === lease;
    try {
      if (!gate.act) {
        if (managing && (await this.store.resignManager(lease, timeoutMs))) {
          this.#isManager = false;
          this.#managerState = undefined;
          this.#event('agent', 'gave up the manager key: an agent that can read the cluster takes it');
        }
        return false;
      }
      if (!snap.format && format.kind !== 'refuse') {
        const f = format.kind === 'use' ? format.format : format.from;
        if (await this.store.createFormat(f, timeoutMs)) this.#event('agent', `cluster format ${f} recorded`);
      } else if (snap.format && format.kind === 'raise' && managing) {
        if (await this.store.raiseFormat(format.to, snap.format.modRevision, lease, timeoutMs))
          this.#event(
            'manager',
            `cluster format raised from ${format.from} to ${format.to}: ${format.reason}`,
          );
      }
    } catch (err) {
      this.#note(`cluster format: ${errorMessage(err)}`);
    }
    return true;
  }

  // --- end of the rolling upgrade's part ---

  /**
   * The node's decisions (synchronous: never interleaved with another decision), then the actions
   * handed to the executor and the guard fed. Also run by the fence timer between rounds.
   */
  #decide(events: NodeEvent[]): Record<string, Report> {
    const t = this.timing;
    const res = nodeStep(this.local, [...this.executor.drain(), ...events], this.#monoSeconds(), {
      leaseTtl: t.leaseTtl,
      fenceMargin: t.fenceMargin,
    });
    this.local = res.local;
    for (const line of res.log) this.#event('node', line);
    for (const a of res.actions) this.executor.submit(a);
    // The guard kills what runs here if no renewal is acknowledged in time, whatever this loop does.
    this.#feedGuard();
    this.#armFenceTimer();
    return res.reports;
  }

  /**
   * A round can take a renew timeout or more when etcd is away; the fence must not wait for it: a
   * timer runs the node step at the fence time itself.
   */
  #armFenceTimer(): void {
    this.#fenceTimer?.cancel();
    const lu = this.local.leaseUntil;
    if (lu === null || this.local.fenced) return;
    const at = lu - this.timing.fenceMargin;
    this.#fenceTimer = this.#clocks.monotonic.setTimer(
      () => this.#decide([]),
      Math.max(0, (at - this.#monoSeconds()) * 1000) + 1,
    );
  }

  async #renew(timeoutMs: number): Promise<NodeEvent[]> {
    const sentAt = this.#monoSeconds();
    if (this.#lease) {
      try {
        const r = await this.store.client.leaseKeepAlive(this.#lease, { timeoutMs });
        if (r.ttl > 0) {
          // The node record is written after the grant; if that write was lost, write it again.
          if (this.snapshot && this.snapshot.nodes[this.o.node]?.lease !== this.#lease)
            await this.#putNode(this.#lease, timeoutMs).catch(() => undefined);
          return [{ kind: 'renewed', sentAt }];
        }
        this.#event('agent', `lease ${this.#lease} expired in etcd`);
        this.#lease = null;
        rmSync(this.paths.leaseFile, { force: true });
        return [{ kind: 'lease-lost', reason: 'etcd says the lease has expired' }];
      } catch (err) {
        this.#note(`renewal failed: ${errorMessage(err)}`);
        return [];
      }
    }
    // A new lease only once nothing runs on the old one (a fenced node first stops what it ran).
    if (Object.values(this.local.vservers).some((x) => isActive(x.status)) && !this.local.fenced) return [];
    const ttl = Math.ceil(this.timing.leaseTtl);
    try {
      const g = await this.store.client.leaseGrant(ttl, { timeoutMs });
      this.#lease = g.id;
      writeJsonAtomic(this.paths.leaseFile, { node: this.o.node, lease: g.id, grantedAt: this.#now() });
      await this.#putNode(g.id, timeoutMs);
      this.#lastReport = '';
      this.#event('agent', `lease ${g.id} granted (TTL ${ttl} s)`);
      return [{ kind: 'renewed', sentAt }];
    } catch (err) {
      this.#note(`no lease yet: ${errorMessage(err)}`);
      return [];
    }
  }

  /** A full observation (container, health, volume), or nothing if it takes longer than a loop turn. */
  #observe(spec: VserverSpec): Promise<ResourceObservation | undefined> {
    return withinTime(this.#inline.observe(spec), OBSERVE_TIMEOUT_MS);
  }

  #putNode(lease: string, timeoutMs: number): Promise<unknown> {
    return this.store.putNode(
      {
        version: RECORD_VERSION,
        node: this.o.node,
        agentVersion: AGENT_VERSION,
        pid: process.pid,
        startedAt: this.#startedAt,
        lease,
        formats: AGENT_FORMATS,
      },
      lease,
      timeoutMs,
    );
  }

  async #read(timeoutMs: number): Promise<Snapshot | undefined> {
    try {
      this.snapshot = await this.store.snapshot(timeoutMs);
      this.#snapshotAt = this.#now();
      this.#adoptConfig(this.snapshot);
      return this.snapshot;
    } catch (err) {
      this.#note(`cannot read the cluster state: ${errorMessage(err)}`);
      return undefined;
    }
  }

  #note(what: string): void {
    if (what !== this.#lastError) this.log.warn({ event: 'store' }, what);
    this.#roundError = what;
  }

  #adoptConfig(snap: Snapshot): void {
    const c = snap.config;
    if (!c || c.modRevision === this.#specRevision) return;
    try {
      const stored = withRetired(parseClusterConfig(c.yaml, `${c.file} (applied)`), c.retired);
      this.stored = stored;
      this.spec = withoutRemoved(stored, Object.keys(c.removed));
      this.#specRevision = c.modRevision;
      writeFileAtomic(this.paths.appliedCopy, c.yaml, 0o600);
      this.#ensured.clear();
      this.log.info({ event: 'config', revision: c.modRevision }, 'applied configuration read');
    } catch (err) {
      this.#note(`stored configuration refused: ${errorMessage(err)}`);
    }
  }

  /** Behind since a refused promotion, until a copy with a newer epoch is healthy on another node. */
  #isBehind(vserver: string): boolean {
    const epoch = this.#behind.get(vserver);
    if (epoch === undefined) return false;
    const caughtUp = Object.values(this.snapshot?.reports ?? {}).some((r) => {
      const x = r.vservers[vserver];
      return r.node !== this.o.node && x?.status === 'healthy' && x.epoch > epoch;
    });
    if (caughtUp) this.#behind.delete(vserver);
    return !caughtUp;
  }

  async #observeLocal(): Promise<NodeEvent[]> {
    const out: NodeEvent[] = [];
    for (const [v, x] of Object.entries(this.local.vservers)) {
      if (this.executor.busy(v)) continue;
      if (x.status !== 'running' && x.status !== 'healthy' && x.status !== 'stopping') continue;
      const spec = this.spec.vservers[v];
      if (!spec) continue;
      const o = await this.#inline.observeRunning(spec).catch(() => undefined);
      if (!o) continue;
      if (o.container !== 'running') {
        out.push({ kind: 'crashed', vserver: v, reason: `container ${o.container}` });
        continue;
      }
      if (o.health === 'healthy' || (o.health === 'none' && x.status === 'running'))
        out.push({ kind: 'health', vserver: v, healthy: true });
      else if (o.health === 'unhealthy') out.push({ kind: 'health', vserver: v, healthy: false });
    }
    return out;
  }

  #feedGuard(): void {
    if (!this.#guard) return;
    const active = Object.entries(this.local.vservers)
      .filter(([, x]) => isActive(x.status))
      .map(([v]) => v);
    const lu = this.local.leaseUntil;
    const deadline =
      lu === null
        ? this.#clocks.monotonic.now()
        : Math.floor((lu - this.timing.leaseTtl + this.timing.guardDeadline) * 1000);
    // Only news is sent (the deadline moves with each renewal): several decisions a second share one.
    const msg = { deadline, protect: { containers: active, volumes: active } };
    const text = JSON.stringify(msg);
    if (text === this.#guardSent && lu !== null) return;
    if (this.#guard.send(msg)) this.#guardSent = text;
  }

  /**
   * Replicas this node holds: created and up (in the vserver's queue, never holding up the loop), and
   * their state every 2 s for the report (in the background too).
   */
  #ensureReplicas(): void {
    if (!this.snapshot?.config) return;
    for (const v of Object.values(this.spec.vservers)) {
      const role = replicaRoleOf(v, this.spec, this.o.node);
      if (!role || this.executor.busy(v.name)) continue;
      // The peers as planned: a node added or removed changes them (membership), volume or not.
      const key = JSON.stringify([v.volume, replicaPlan(v, this.spec, this.o.node, '').replication.peers]);
      if (isActive(this.local.vservers[v.name]?.status)) {
        // Running here: only its peers follow the cluster, in the running daemon (never a down/up).
        if (this.#ensured.get(v.name) === key) continue;
        this.executor.upkeep(v.name, async () => {
          try {
            await followPeers(this.o.stateDir, v, this.#replicaContext(v.name), this.log);
            this.#ensured.set(v.name, key);
          } catch (err) {
            this.#note(`${v.name}: replica peers not updated: ${errorMessage(err)}`);
          }
        });
        continue;
      }
      if (this.#ensured.get(v.name) === key && !this.#replicas[v.name]?.failed) continue;
      this.executor.upkeep(v.name, async () => {
        try {
          await this.resources.ensureReplica(v, this.#replicaContext(v.name));
          // A daemon that was already up gets the new peers now, not at its next restart.
          await followPeers(this.o.stateDir, v, this.#replicaContext(v.name), this.log);
          this.#ensured.set(v.name, key);
          this.#replicasAt = 0;
        } catch (err) {
          this.#note(`${v.name}: replica not ready: ${errorMessage(err)}`);
        }
      });
    }
    if (this.#replicasBusy || this.#now() - this.#replicasAt < 2000) return;
    this.#replicasBusy = true;
    this.#replicasAt = this.#now();
    void (async () => {
      const replicas: Record<string, ReplicaReport> = {};
      for (const v of Object.values(this.spec.vservers)) {
        if (replicaRoleOf(v, this.spec, this.o.node) !== 'data') continue;
        const o = await this.#observe(v);
        if (o) replicas[v.name] = { ...o.volume, upToDate: o.volume.upToDate && !this.#isBehind(v.name) };
      }
      this.#replicas = replicas;
    })().finally(() => {
      this.#replicasBusy = false;
    });
  }

  async #publishReport(
    reports: Record<string, { status: VserverReport['status']; since: number }>,
  ): Promise<void> {
    if (!this.#lease) return;
    const vservers: Record<string, VserverReport> = {};
    for (const [v, r] of Object.entries(reports)) {
      const x = this.local.vservers[v];
      vservers[v] = {
        status: r.status,
        since: Math.round((r.since + this.#wallOffset) * 1000) / 1000,
        epoch: x?.epoch ?? 0,
        health: r.status,
      };
    }
    const body = { fenced: this.local.fenced, vservers, replicas: this.#replicas };
    const text = JSON.stringify(body);
    // Unchanged reports are re-sent now and then only (they live under the lease anyway).
    if (text === this.#lastReport && this.#now() - this.#lastReportAt < 10_000) return;
    const report: NodeReport = { version: RECORD_VERSION, node: this.o.node, at: this.#now(), ...body };
    try {
      await this.store.putReport(report, this.#lease, this.#ms(this.timing.renewTimeout));
      this.#lastReport = text;
      this.#lastReportAt = this.#now();
    } catch (err) {
      this.#note(`report not published: ${errorMessage(err)}`);
    }
  }

  async #manage(): Promise<void> {
    const snap = this.snapshot;
    const lease = this.#lease;
    if (!snap || !lease || this.local.fenced || this.#now() - this.#snapshotAt > SNAPSHOT_FRESH_MS) return;
    const timeoutMs = this.#ms(this.timing.renewTimeout);
    if (!snap.manager) {
      try {
        if (await this.store.claimManager(lease, timeoutMs)) {
          this.#event('agent', 'this node is the manager now (took the free manager key)');
          this.#managerState = undefined;
        }
      } catch (err) {
        this.#note(`manager election: ${errorMessage(err)}`);
      }
      return;
    }
    const mine = snap.manager.node === this.o.node && snap.manager.lease === lease;
    if (mine !== this.#isManager && !mine)
      this.#event('agent', `no longer the manager (${snap.manager.node} is)`);
    this.#isManager = mine;
    if (!mine) {
      this.#leaderWhere = ''; // a manager again later checks the etcd leader's place at once
      return;
    }
    if (this.#now() - this.#trimmedAt > 60_000) {
      // The cluster's log has a bounded size: the manager keeps the newest events.
      this.#trimmedAt = this.#now();
      void this.store
        .trimEvents(EVENTS_KEPT, 5000)
        .catch((err: unknown) => this.#note(`events not trimmed: ${errorMessage(err)}`));
    }
    this.#placeLeader(snap);
    if (!snap.config) return;

    // Continue from the stored state (a new manager knows only that), or from this manager's last write.
    const prevState = this.#managerState ?? snap.state?.state ?? emptyState();
    const prevTable = snap.state?.table ?? {};
    const obs = observeCluster(this.spec, snap, prevState, this.#now());
    const requests = snap.requests.map((r) => r.record.event);
    const res = step(prevState, obs, this.#now() / 1000, requests, managerPolicy(this.spec));
    const table = applyCommands(prevTable, res.commands);
    for (const line of res.log) this.#event('manager', line);
    const changed =
      requests.length > 0 ||
      JSON.stringify(res.state) !== JSON.stringify(prevState) ||
      JSON.stringify(table) !== JSON.stringify(prevTable) ||
      !snap.state;
    if (!changed) return;
    try {
      const ok = await this.store.writeManagerState(
        lease,
        res.state,
        table,
        snap.requests.map((r) => r.key),
        timeoutMs,
      );
      if (ok) {
        this.#managerState = res.state;
        if (this.snapshot?.state) this.snapshot.state = { ...this.snapshot.state, state: res.state, table };
        // This node acts on the table it has just stored at once, not after its own write comes back
        // through the watch and a new read (a few hundred ms on a migration's first step).
        if (JSON.stringify(table) !== JSON.stringify(prevTable))
          this.#decide([{ kind: 'assignments', table }]);
      } else {
        this.#managerState = undefined;
        this.#event('agent', 'manager state not written: this node no longer holds the manager key');
      }
    } catch (err) {
      // Unknown outcome: start again from what is stored.
      this.#managerState = undefined;
      this.#note(`manager state not written: ${errorMessage(err)}`);
    }
  }

  /**
   * In the background, at once when where vservers run changes, else every 5 s: etcd's leader where a
   * loss disturbs least (leader-placement.ts).
   */
  #placeLeader(snap: Snapshot): void {
    if (this.boot.etcd.endpoints.length > 0 || this.#leaderBusy) return;
    const active: Record<string, number> = {};
    for (const r of Object.values(snap.reports))
      active[r.node] = Object.values(r.vservers).filter((x) => isActive(x.status)).length;
    // At once when where vservers run changed (or this node just became the manager), else now and then.
    const where = JSON.stringify(Object.keys(active).filter((n) => active[n]! > 0));
    if (where === this.#leaderWhere && this.#now() - this.#leaderAt < LEADER_CHECK_MS) return;
    this.#leaderWhere = where;
    this.#leaderBusy = true;
    this.#leaderAt = this.#now();
    const port = this.boot.etcd.client_port;
    const endpointOf = (node: string) =>
      `https://${this.boot.nodes.find((n) => n.name === node)?.addresses[0]}:${port}`;
    void (async () => {
      const client = this.store.client;
      const list = await client.memberList();
      const members = await Promise.all(
        list.map(async (m) => {
          const status = await client.status(endpointOf(m.name)).catch(() => undefined);
          const role = this.boot.nodes.find((n) => n.name === m.name)?.role;
          return {
            node: m.name,
            id: m.id,
            healthy: status !== undefined,
            witness: role === 'witness',
            status,
          };
        }),
      );
      const leaderId = members.find((m) => m.status)?.status?.leader ?? '0';
      const move = leaderMove(leaderId, members, active, {
        draining: Object.keys(snap.standby),
        manager: this.o.node,
      });
      if (!move) return;
      const from = members.find((m) => m.id === leaderId)!;
      await client.moveLeader(endpointOf(from.node), move.to.id);
      this.#event('agent', `etcd leadership moved from ${from.node} to ${move.to.node}: ${move.reason}`);
    })()
      .catch((err: unknown) => this.#note(`etcd leader placement: ${errorMessage(err)}`))
      .finally(() => {
        this.#leaderBusy = false;
      });
  }

  /** What an operator did (through the API), in the cluster's log; the next round writes it. */
  operatorEvent(text: string): void {
    this.#event('operator', text);
    this.#wake?.();
  }

  #event(source: EventRecord['source'], text: string): void {
    this.log.info({ event: source }, text);
    const record: EventRecord = { version: RECORD_VERSION, at: this.#now(), node: this.o.node, source, text };
    // Before the store exists (agent start), keyed later with the same rule.
    this.#pendingEvents.push({ key: this.store?.eventKey(record) ?? '', record });
  }

  async #flushEvents(timeoutMs = this.#ms(this.timing.renewTimeout)): Promise<void> {
    if (this.#pendingEvents.length === 0 || !this.store) return;
    const batch = this.#pendingEvents.map((e) => ({ ...e, key: e.key || this.store.eventKey(e.record) }));
    this.#pendingEvents = [];
    try {
      await this.store.putEvents(batch, timeoutMs);
    } catch {
      // Kept for the next round (bounded: the oldest go first when the store stays away).
      this.#pendingEvents = [...batch, ...this.#pendingEvents].slice(-1000);
    }
  }

  /**
   * The agent's last words (it exits next, nobody retries them): several tries for up to 5 s. Its own
   * member may be going away with it (a removed node), so the write may need a new connection elsewhere.
   */
  async #flushEventsBeforeExit(): Promise<void> {
    const until = this.#monoSeconds() + 5;
    while (this.#pendingEvents.length > 0 && this.#monoSeconds() < until) {
      await this.#flushEvents(Math.max(1000, this.#ms(this.timing.renewTimeout)));
      if (this.#pendingEvents.length > 0) await this.#clocks.monotonic.sleep(200);
    }
  }

  view(): AgentView {
    const lu = this.local.leaseUntil;
    return {
      node: this.o.node,
      spec: this.spec,
      snapshot: this.snapshot,
      snapshotAgeMs: this.snapshot ? this.#now() - this.#snapshotAt : null,
      local: this.local,
      leaseId: this.#lease,
      leaseValidFor: lu === null ? null : Math.max(0, lu - this.#monoSeconds()),
      timing: this.timing,
      isManager: this.#isManager,
      lastError: this.#lastError,
      refusal: this.#refusal,
    };
  }
}

/** The promise's value, or undefined when it fails or takes longer than `ms`. */
function withinTime<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  return Promise.race([p.catch(() => undefined), late]).finally(() => clearTimeout(timer));
}
