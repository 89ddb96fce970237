/**
 * The secondary side: listens on its TCP address, authenticates primaries, applies their writes to
 * the local BlockDevice and acknowledges each one after it is written. Writes to different blocks
 * run concurrently; a write waits for every earlier one it overlaps (apply-queue.ts), so arrival
 * order holds wherever it matters. FLUSH is acknowledged after every earlier write is applied and
 * the device is flushed (fdatasync).
 * A diskless tiebreaker runs the same server without a device: it only answers the handshake.
 *
 * What a connected primary knows of this replica's state is never older than what is durable here:
 * a STATE that makes this replica decide something (UpToDate after a resync) is answered once that
 * decision is saved, and every other durable change (Inconsistent at the first resync block,
 * Outdated when the device demotes, a new epoch) is pushed to each connected primary as it happens.
 */
import { type Clock, systemClock } from '../../lib/clock.ts';
import type { BlockDevice } from '../block-device.ts';
import { ApplyQueue } from './apply-queue.ts';
import { type Connection, type ConnectionLog, HandshakeRefused, serverHandshake } from './connection.ts';
import { blockDigests } from './diverging-blocks.ts';
import type { VersionRange } from './frame.ts';
import { FramePool } from './frame-pool.ts';
import { adoptSourceGeneration, type Generation, sameGeneration } from './generation.ts';
import { stateKey } from './peer-report.ts';
import { AckStatus, type AckStatusCode, type Message, type PeerState } from './protocol.ts';
import { type ActivityReport, type ActivitySource, mergeRanges, type Range } from './reconciliation.ts';
import type { ReplicaMeta, ReplicaStore } from './replica-store.ts';
import { diskStateWhenFenced } from './role.ts';
import { tcpTransport } from './tcp-transport.ts';
import type { Endpoint, Listener, Transport } from './transport.ts';
import { localVersions } from './version.ts';

export const MAX_DIGEST_SPAN = 256 * 1024 * 1024;
export const MAX_READ = 1024 * 1024;
/** changedBlocks when this replica cannot tell: larger than any real count. */
export const UNKNOWN_CHANGES = Number.MAX_SAFE_INTEGER;

export interface ReplicaServerOptions {
  node: string;
  volumeUuid: string;
  secret: Buffer;
  host: string;
  port: number;
  /** Absent for a diskless tiebreaker. */
  device?: BlockDevice;
  size: number;
  store: ReplicaStore;
  /**
   * What this node wrote on its own that a peer lacks (ReplicatedDevice.changedBlocks), reported
   * in STATE for the after-split-brain policies. Without it a data replica reports "unknown"
   * (Number.MAX_SAFE_INTEGER), so no policy ever picks it as the side without changes.
   */
  divergence?: {
    changedBlocks(peer: string): number | undefined;
    /** After a crash as primary: the activity-log extents (see PeerState.crashRanges). */
    crashRanges?(): Array<{ offset: number; length: number }>;
    /**
     * The record of the primaries' activity-log ranges (reconciliation.ts): a primary's ACTIVITY
     * (resolves once durable), its "you hold my data" STATE, and what STATE reports.
     */
    receiveActivity?(from: ActivitySource, ranges: Range[], unflushed: Range[]): Promise<void>;
    reconciledByPrimary?(by: ActivitySource): Promise<void>;
    activityReport?(): ActivityReport | undefined;
  };
  /**
   * Write each replicated block durably (BlockDevice.writeDurable) and say so in STATE, so the
   * primary's FSYNC needs no FLUSH round trip (default true where the device can). False suits
   * disks on which a FUA write costs a whole cache flush (rotating disks): one fdatasync per FLUSH.
   */
  durableWrites?: boolean;
  /** True while this node is primary itself (it then refuses peer writes). */
  isPrimary?: () => boolean;
  /** The protocol versions this server speaks (default: `localVersions()`, version.ts). */
  versions?: VersionRange;
  log: ConnectionLog;
  /** Handshake timeouts and connection liveness (default: the system's). */
  clock?: Clock;
  /** Where it listens (default: TCP). */
  transport?: Transport;
}

export interface ReplicaServerStatus {
  listening: string;
  /** `version`: the protocol version negotiated with that peer. */
  connections: Array<{ peer: string; version: number; bytesReceived: number; bytesSent: number }>;
  writesApplied: number;
  refused: number;
  closedForBadInput: number;
  /** The protocol versions this server speaks. */
  versions: VersionRange;
  /** The last handshake refused for want of a common protocol version (a peer to upgrade), if any. */
  lastVersionRefusal: { remote: string; reason: string; at: string } | null;
}

export class ReplicaServer {
  readonly o: ReplicaServerOptions;
  #server: Listener | undefined;
  #conns = new Set<Connection>();
  #introduced = new WeakSet<Connection>();
  #sockets = new Set<Endpoint>();
  #writesApplied = 0;
  #refused = 0;
  #closedForBadInput = 0;
  readonly #versions: VersionRange;
  #lastVersionRefusal: ReplicaServerStatus['lastVersionRefusal'] = null;
  /** Operations of all connections, in arrival order; overlapping ones never overtake each other. */
  #queue = new ApplyQueue();
  /** Receive buffers for large writes, reused once each write is on the disk. */
  #pool = new FramePool();
  /** Per introduced connection: stateKey() of the last STATE sent on it (see #publish). */
  #lastSent = new WeakMap<Connection, string>();
  /** The connection whose STATE is being answered: it gets the answer, not a pushed update too. */
  #answering: Connection | undefined;
  #unsubscribe: () => void;

  /** How peer writes reach the disk: durably (see ReplicaServerOptions.durableWrites) or not. */
  readonly #write: ((offset: number, data: Buffer) => Promise<void>) | undefined;
  readonly #durable: boolean;
  /** Without durable writes: ranges applied since the last FLUSH began (a crash may lose them). */
  #unflushed: Range[] = [];

  constructor(o: ReplicaServerOptions) {
    this.o = o;
    // Here rather than at the first handshake: a bad CVSERVER_REPLICATION_MAX_VERSION stops the daemon.
    this.#versions = o.versions ?? localVersions();
    const d = o.device;
    this.#durable = d?.writeDurable !== undefined && o.durableWrites !== false;
    this.#write = d && (this.#durable ? d.writeDurable!.bind(d) : d.write.bind(d));
    this.#unsubscribe = o.store.onSave(() => this.#publish());
  }

  async listen(): Promise<number> {
    const transport = this.o.transport ?? tcpTransport;
    this.#server = await transport.listen(this.o.host, this.o.port, (socket) => this.#accept(socket));
    return this.#server.port;
  }

  status(): ReplicaServerStatus {
    return {
      listening: `${this.o.host}:${this.o.port}`,
      connections: [...this.#conns].map((c) => ({
        peer: c.peerNode,
        version: c.version,
        bytesReceived: c.bytesReceived,
        bytesSent: c.bytesSent,
      })),
      writesApplied: this.#writesApplied,
      refused: this.#refused,
      closedForBadInput: this.#closedForBadInput,
      versions: this.#versions,
      lastVersionRefusal: this.#lastVersionRefusal,
    };
  }

  async close(): Promise<void> {
    this.#unsubscribe();
    for (const c of this.#conns) c.close('server closing');
    for (const s of this.#sockets) s.destroy();
    await this.#server?.close();
    await this.#queue.idle();
  }

  #accept(socket: Endpoint): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => undefined);
    serverHandshake(socket, {
      clock: this.o.clock ?? systemClock,
      node: this.o.node,
      volumeUuid: this.o.volumeUuid,
      secret: this.o.secret,
      pool: this.#pool,
      versions: this.#versions,
    }).then(
      (conn) => {
        this.#conns.add(conn);
        conn.onClose((reason) => {
          this.#conns.delete(conn);
          if (reason.startsWith('bad ')) this.#closedForBadInput++;
          if (conn.peerError !== undefined)
            this.o.log.warn({ peer: conn.peerNode, message: conn.peerError }, 'peer reported an error');
          this.o.log.info({ peer: conn.peerNode, reason }, 'replication connection closed');
        });
        conn.onMessage((m, epoch, release) => this.#handle(conn, m, epoch, release));
      },
      (err: Error) => {
        this.#closedForBadInput++;
        if (err instanceof HandshakeRefused)
          this.#lastVersionRefusal = {
            remote: `${socket.remoteAddress}:${socket.remotePort}`,
            reason: err.message,
            at: new Date((this.o.clock ?? systemClock).now()).toISOString(),
          };
        this.o.log.warn(
          { remote: socket.remoteAddress, reason: err.message },
          'replication handshake refused',
        );
      },
    );
  }

  /** Our STATE, as `peer` (the connected node) sees it. */
  state(peer?: string): PeerState {
    const m = this.o.store.load();
    const changed = !this.o.device
      ? 0
      : ((peer !== undefined ? this.o.divergence?.changedBlocks(peer) : undefined) ?? UNKNOWN_CHANGES);
    const crashedPrimary = m.primaryOpen && !this.o.isPrimary?.();
    const crash = crashedPrimary ? this.o.divergence?.crashRanges?.() : undefined;
    const activity = this.o.device ? this.o.divergence?.activityReport?.() : undefined;
    return {
      node: this.o.node,
      role: this.o.isPrimary?.() ? 'Primary' : 'Secondary',
      diskState: this.o.device ? m.diskState : 'Diskless',
      generation: m.generation,
      // primaryOpen is also set while this node runs as primary: only without that is it a crash.
      crashedPrimary,
      epoch: m.epoch,
      size: this.o.size,
      changedBlocks: changed,
      promotedAt: 0,
      ...(this.#durable ? { durableWrites: true } : {}),
      ...(crash && crash.length <= 256 ? { crashRanges: crash.map((r) => [r.offset, r.length]) } : {}),
      ...(activity ? { activity } : {}),
      ...(m.witnessed ? { witnessed: m.witnessed } : {}),
      ...(m.lastAcked ? { lastAcked: m.lastAcked } : {}),
    };
  }

  #sendState(conn: Connection, sent: 'reply' | 'update' | undefined): void {
    const state = this.state(conn.peerNode);
    this.#lastSent.set(conn, stateKey(state));
    conn.send({ type: 'state', state: sent ? { ...state, sent } : state });
  }

  /** After a durable save: every connected primary whose view of this replica changed is told. */
  #publish(): void {
    for (const conn of this.#conns) {
      if (conn === this.#answering || !this.#introduced.has(conn) || conn.closed) continue;
      if (stateKey(this.state(conn.peerNode)) !== this.#lastSent.get(conn)) this.#sendState(conn, 'update');
    }
  }

  /**
   * Remembers a higher epoch durably; returns false when `epoch` is older than the highest seen.
   * `loaded`: the metadata the caller just loaded in the same tick (saves a second load per write).
   */
  #checkEpoch(epoch: number, loaded?: ReplicaMeta): boolean {
    const m = loaded ?? this.o.store.load();
    if (epoch < m.epoch) return false;
    // A primary that sees a newer epoch is fenced (diskStateWhenFenced).
    const diskState = this.o.isPrimary?.() === true ? diskStateWhenFenced(m.diskState) : m.diskState;
    if (epoch > m.epoch) this.o.store.save({ ...m, epoch, diskState });
    return true;
  }

  /**
   * Records a current-epoch primary's generation as `witnessed`, durably before `conn` is answered: a
   * replica (or a tiebreaker) then forbids the promotion of one older than it (handshake.ts,
   * promotionBlockedBy), and the primary acknowledges nothing in a new generation before its voters
   * answer with it. A failed save is logged: the answer says what is (the primary waits on).
   */
  #witness(conn: Connection, generation: Generation): void {
    const m = this.o.store.load();
    if (m.witnessed && sameGeneration(m.witnessed, generation)) return;
    this.#answering = conn;
    try {
      this.o.store.save({ ...m, witnessed: generation });
    } catch (err) {
      this.o.log.warn(
        { peer: conn.peerNode, err: (err as Error).message },
        "could not record the primary's generation",
      );
    } finally {
      this.#answering = undefined;
    }
  }

  #handle(conn: Connection, m: Message, epoch: number, release: () => void): void {
    const meta = this.o.store.load();
    conn.epoch = meta.epoch;
    switch (m.type) {
      case 'state': {
        // First STATE: the primary introduces itself; we answer with ours. A later STATE from a
        // current-epoch primary says "you now hold my data": adopt its generation (sync done or
        // generation rotated while connected).
        if (m.state.role === 'Primary' && !this.#checkEpoch(epoch)) {
          // Tell the old primary our epoch first: that is how it learns it is fenced.
          conn.send({ type: 'state', state: this.state(conn.peerNode) });
          this.#refuse(conn, 'stale epoch in state');
          return;
        }
        if (conn.peerNode !== m.state.node) {
          conn.close('bad state: node name differs from the handshake');
          return;
        }
        if (m.state.role === 'Primary' && this.#introduced.has(conn) && this.o.device) {
          // Answered from inside the barrier, after the save: behind queued writes the answer would
          // otherwise carry the disk state from before (Inconsistent after a resync), and the
          // primary would keep it while the link stays up.
          this.#queue
            .submit(undefined, async () => {
              // Resynced by this primary (or in sync with it): earlier primaries' leftovers are gone.
              await this.o.divergence?.reconciledByPrimary?.({ node: conn.peerNode, epoch });
              const now = this.o.store.load();
              this.#answering = conn;
              try {
                this.o.store.save({
                  ...now,
                  generation: adoptSourceGeneration(now.generation, m.state.generation),
                  witnessed: m.state.generation,
                  diskState: 'UpToDate',
                  // Holding the primary's data ends what a crash as primary left unsure here.
                  primaryOpen: false,
                });
              } finally {
                this.#answering = undefined;
              }
              this.#sendState(conn, 'reply');
            })
            .catch((err: Error) => {
              // Not saved: the answer says what is durable (the state from before).
              this.o.log.warn(
                { peer: conn.peerNode, err: err.message },
                "could not record the primary's state",
              );
              this.#sendState(conn, 'reply');
            });
          return;
        }
        // Its introduction: what this primary's data is called is witnessed here.
        if (m.state.role === 'Primary') this.#witness(conn, m.state.generation);
        const first = !this.#introduced.has(conn);
        this.#introduced.add(conn);
        this.#sendState(conn, first ? undefined : 'reply');
        return;
      }
      case 'write': {
        const refuse = this.#admit(epoch, m.offset, m.data.length, meta);
        if (refuse !== AckStatus.ok) {
          this.#refused++;
          conn.send({ type: 'ack', id: m.id, status: refuse });
          return;
        }
        const write = this.#write!;
        const job = this.#queue.submit({ offset: m.offset, length: m.data.length }, async () => {
          if (m.resync) {
            // Before the first resync block lands, the disk is no longer a consistent image. (In
            // the queue: it must come after a STATE barrier that declared this disk UpToDate.)
            const cur = this.o.store.load();
            if (cur.diskState === 'UpToDate' || cur.diskState === 'Outdated')
              this.o.store.save({ ...cur, diskState: 'Inconsistent' });
          }
          await write(m.offset, m.data);
          if (!this.#durable) {
            this.#unflushed.push([m.offset, m.data.length]);
            if (this.#unflushed.length > 1024) this.#unflushed = mergeRanges(this.#unflushed);
          }
        });
        void job.finally(release).catch(() => undefined);
        job.then(
          () => {
            this.#writesApplied++;
            conn.send({ type: 'ack', id: m.id, status: AckStatus.ok });
          },
          () => conn.send({ type: 'ack', id: m.id, status: AckStatus.ioError }),
        );
        return;
      }
      case 'flush': {
        if (!this.o.device) {
          conn.send({ type: 'ack', id: m.id, status: AckStatus.ok });
          return;
        }
        const device = this.o.device;
        // Every earlier write, not the later ones: they need not wait for this fdatasync.
        const job = this.#queue.submit(
          undefined,
          async () => {
            const covered = this.#unflushed;
            this.#unflushed = [];
            await device.flush().catch((err: Error) => {
              this.#unflushed.push(...covered);
              throw err;
            });
          },
          { holdsLater: false },
        );
        job.then(
          () => conn.send({ type: 'ack', id: m.id, status: AckStatus.ok }),
          () => conn.send({ type: 'ack', id: m.id, status: AckStatus.ioError }),
        );
        return;
      }
      case 'activity': {
        const refuse = this.#admit(epoch, 0, 512, meta);
        if (refuse !== AckStatus.ok) {
          this.#refused++;
          conn.send({ type: 'ack', id: m.id, status: refuse });
          return;
        }
        const from = { node: conn.peerNode, epoch };
        // A barrier: the writes behind it (into the extents it names) wait until it is durable.
        const job = this.#queue.submit(undefined, async () => {
          this.#unflushed = mergeRanges(this.#unflushed);
          await this.o.divergence?.receiveActivity?.(from, m.ranges, this.#unflushed);
        });
        job.then(
          () => {
            conn.send({ type: 'ack', id: m.id, status: AckStatus.ok });
            // Another node connected meanwhile (a newer primary whose epoch has not reached us yet,
            // this one still running): it decided its handshake without these ranges, so it gets them.
            for (const other of this.#conns)
              if (other !== conn && this.#introduced.has(other) && !other.closed)
                this.#sendState(other, 'update');
          },
          (err: Error) => {
            // Writes it should cover must not be acknowledged: the primary marks them for later.
            conn.send({ type: 'ack', id: m.id, status: AckStatus.ioError });
            conn.close(`could not record the primary's activity log: ${err.message}`);
          },
        );
        return;
      }
      case 'generation': {
        // The primary named its data anew and this replica does not hold it (yet): witnessed only.
        if (!this.#introduced.has(conn)) {
          conn.close('bad message: generation before the introduction');
          return;
        }
        if (!this.#checkEpoch(epoch)) {
          conn.send({ type: 'state', state: this.state(conn.peerNode) });
          this.#refuse(conn, 'stale epoch in generation');
          return;
        }
        this.#witness(conn, m.generation);
        this.#sendState(conn, 'reply');
        return;
      }
      case 'digestRequest': {
        const { id, offset, length, chunk } = m;
        if (
          !this.o.device ||
          chunk <= 0 ||
          chunk > MAX_READ ||
          length > MAX_DIGEST_SPAN ||
          offset + length > this.o.size
        ) {
          conn.send({ type: 'digestReply', id, status: AckStatus.outOfRange, digests: Buffer.alloc(0) });
          return;
        }
        const device = this.o.device;
        const job = this.#queue.submit({ offset, length }, () => blockDigests(device, offset, length, chunk));
        job.then(
          (digests) => conn.send({ type: 'digestReply', id, status: AckStatus.ok, digests }),
          () => conn.send({ type: 'digestReply', id, status: AckStatus.ioError, digests: Buffer.alloc(0) }),
        );
        return;
      }
      case 'readRequest': {
        const { id, offset, length } = m;
        if (!this.o.device || length > MAX_READ || offset + length > this.o.size) {
          conn.send({ type: 'readReply', id, status: AckStatus.outOfRange, data: Buffer.alloc(0) });
          return;
        }
        const device = this.o.device;
        const job = this.#queue.submit({ offset, length }, () => device.read(offset, length));
        job.then(
          (data) => conn.send({ type: 'readReply', id, status: AckStatus.ok, data }),
          () => conn.send({ type: 'readReply', id, status: AckStatus.ioError, data: Buffer.alloc(0) }),
        );
        return;
      }
      default:
        conn.close(`bad message: unexpected ${m.type} after handshake`);
    }
  }

  #admit(epoch: number, offset: number, length: number, meta: ReplicaMeta): AckStatusCode {
    if (!this.o.device) return AckStatus.ioError;
    if (this.o.isPrimary?.()) return AckStatus.notSecondary;
    if (!this.#checkEpoch(epoch, meta)) return AckStatus.staleEpoch;
    if (offset % 512 !== 0 || offset + length > this.o.size || length === 0) return AckStatus.outOfRange;
    return AckStatus.ok;
  }

  #refuse(conn: Connection, why: string): void {
    this.#refused++;
    conn.send({ type: 'error', message: why });
    conn.close(`refused: ${why}`);
  }
}
