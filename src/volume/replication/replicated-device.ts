/**
 * The primary's BlockDevice (protocol C): a write resolves only after the local write and every
 * connected peer that holds data acknowledged it; flush resolves after the local fdatasync and every
 * such peer's. Absent peers get the write's extents marked in their dirty bitmap; on reconnect the
 * generation identifiers decide what travels (bitmap resync, full sync, split-brain, unrelated).
 */

import { randomBytes } from 'node:crypto';
import { type Clock, systemClock } from '../../lib/clock.ts';
import { type BlockDevice, DeviceError } from '../block-device.ts';
import { ApplyQueue } from './apply-queue.ts';
import { type ByteRange, DEFAULT_EXTENT_SIZE, DirtyBitmap, ExtentSet, loadBitmapFrom } from './bitmap.ts';
import { type ConnectionLog, PEER_TIMEOUT_MS } from './connection.ts';
import { findDiverging, saveDiverging, type VerifyResult } from './diverging-blocks.ts';
import { ExtentHolds } from './extent-holds.ts';
import {
  type AfterSplitBrainPolicy,
  clearBitmapGeneration,
  type Generation,
  randomGenerationId,
  startNewGeneration,
} from './generation.ts';
import { decideHandshake, promotionRefusal } from './handshake.ts';
import { type PeerAddress, PeerLink } from './peer-link.ts';
import { bitmapFile, PeerReplica, type PeerStatus } from './peer-replica.ts';
import { PrimaryActivityLog } from './primary-activity-log.ts';
import { AckStatus, type PeerState } from './protocol.ts';
import { ReceivedActivity } from './received-activity.ts';
import {
  type ActivityReport,
  type ActivitySource,
  activityReport,
  mergeRanges,
  promotionMarks,
  type Range,
  reconcileMarks,
} from './reconciliation.ts';
import type { ReplicaStore } from './replica-store.ts';
import { resyncPeer } from './resync-loop.ts';
import {
  admitWrite,
  diskStateWhenFenced,
  mustStartGeneration,
  promote,
  type QuorumPolicy,
  quorum,
  type ReplicaRoleState,
  stepDown,
} from './role.ts';
import { savedBlocksName } from './saved-blocks.ts';
import { DirStateFiles, type StateFiles } from './state-files.ts';
import type { Transport } from './transport.ts';

export interface ReplicationConfig {
  node: string;
  volumeUuid: string;
  secret: Buffer;
  peers: PeerAddress[];
  quorum: QuorumPolicy;
  afterSplitBrain: AfterSplitBrainPolicy;
  /** Directory for per-peer bitmaps, the activity log and saved discarded blocks. */
  stateDir: string;
  /** Resync bandwidth cap in bytes/s (0 = unlimited); application writes pause resync briefly too. */
  resyncRate?: number;
  extentSize?: number;
  alExtentSize?: number;
  alSlots?: number;
  now?: () => number;
  /** Time and timers (default: the system's; the simulation's ManualClock in test/sim). */
  clock?: Clock;
  /** How peers are reached (default: TCP). */
  transport?: Transport;
  /** Where the engine's own files live (default: `stateDir` on disk). */
  files?: StateFiles;
  /** Random bytes for generation ids (default: crypto; seeded in the simulation). */
  random?: (n: number) => Buffer;
}

export type { PeerStatus, ResyncProgress } from './peer-replica.ts';

export interface ReplicationStatus {
  role: 'Primary' | 'Secondary';
  diskState: string;
  epoch: number;
  fenced: boolean;
  generation: Generation;
  /** The newest primary's generation this replica heard of (a promotion older than it is refused). */
  witnessed: Generation | null;
  /** The generation of this node's last acknowledgement as primary. */
  lastAcked: string | null;
  afterSplitBrain: AfterSplitBrainPolicy;
  /** Resync cap in bytes/s, 0 = unlimited. */
  resyncRate: number;
  quorum: {
    policy: QuorumPolicy;
    voters: number;
    reachable: number;
    needed: number;
    hasQuorum: boolean;
    suspendedWrites: number;
  };
  peers: PeerStatus[];
}

export type { VerifyResult } from './diverging-blocks.ts';

/** How long a quorum check waits for each peer's answer (see #checkQuorum). */
const QUORUM_CHECK_MS = Math.max(100, Math.floor(PEER_TIMEOUT_MS / 6));

export class ReplicatedDevice implements BlockDevice {
  readonly size: number;
  readonly local: BlockDevice;
  readonly store: ReplicaStore;
  readonly c: ReplicationConfig;
  readonly log: ConnectionLog;
  #role: 'Primary' | 'Secondary' = 'Secondary';
  #fenced = false;
  /** The epoch of this node's own promotion: any higher one seen anywhere fences it. */
  #epoch = 0;
  #peers: PeerReplica[] = [];
  readonly #al: PrimaryActivityLog;
  /** Application writes in flight, by byte range (overlapping ones run in arrival order). */
  #ordered = new ApplyQueue();
  /** See changedBlocks(): the generation this node last started as primary, if known. */
  #ownGeneration: string | undefined;
  /** See crashRanges(). */
  #crashRanges: ByteRange[] = [];
  #stateWaiters: Array<() => void> = [];
  #suspended = 0;
  #rotated = false;
  /** Cache of meta's lastAcked (#acknowledging). */
  #lastAcked: string | undefined;
  /** This term, a write failed after it could reach this disk (see stepDown in role.ts). */
  #unacknowledgedLocal = false;
  /** Per peer, the activity record of its last STATE seen (see #reconcileLate). */
  #activitySeen = new Map<string, string>();
  /** A quorum check after a peer was lost (#checkQuorum): no write is admitted or acknowledged meanwhile. */
  #quorumCheck: Promise<void> | undefined;
  /** Per bitmap extent: application writes in flight, and extents a resync holds. */
  readonly #holds: ExtentHolds;
  #extentSize: number;
  #promotedAt = 0;
  #closed = false;
  /** Peers the operator chose to discard in a split-brain (next handshake resolves in our favour). */
  #forceSurvivor = new Set<string>();
  readonly #clock: Clock;
  readonly #files: StateFiles;
  /** A local write completed since the last local flush started (see #persistForEviction). */
  #localUnflushed = false;
  /** The activity-log ranges this replica's primaries shipped to it (reconciliation.ts). */
  readonly #received: ReceivedActivity;

  constructor(local: BlockDevice, store: ReplicaStore, c: ReplicationConfig, log: ConnectionLog) {
    this.local = local;
    this.size = local.size;
    this.store = store;
    this.c = c;
    this.log = log;
    this.#extentSize = c.extentSize ?? DEFAULT_EXTENT_SIZE;
    this.#holds = new ExtentHolds(this.#extentSize);
    this.#clock = c.clock ?? systemClock;
    this.#files = c.files ?? new DirStateFiles(c.stateDir);
    this.#ownGeneration = this.#files.read('own-generation')?.toString('utf8').trim() || undefined;
    const meta = store.load();
    this.#al = new PrimaryActivityLog(
      this.#files.openSlots('activity-log'),
      { size: this.size, extentSize: c.alExtentSize, slots: c.alSlots },
      {
        // The peers record the new hot set too, before any write into it reaches them (on the same
        // connections, after this), while the commit runs (reconciliation.ts).
        ship: (ranges) => void this.#shipActivity(ranges),
        persistForEviction: () => this.#persistForEviction(),
      },
    );
    this.#received = new ReceivedActivity(this.#files);
    if (meta.primaryOpen) this.#crashRanges = this.#al.rangesOf(this.#al.hotAtOpen);
    for (const peer of c.peers) this.#peers.push(this.#newPeer(peer, meta.primaryOpen));
    if (meta.primaryOpen) this.#crashRanges = this.#uncleanRanges();
  }

  /**
   * Where this disk may hold writes nobody acknowledged, after a crash or an unclean step-down: the
   * activity log's extents, and every extent a data peer's bitmap marks (a failed write's extent can
   * leave the log before this node stops; the bitmap still names it, as DRBD ORs both bitmaps).
   */
  #uncleanRanges(): ByteRange[] {
    const all: Range[] = this.#crashRanges.map((r): Range => [r.offset, r.length]);
    for (const p of this.#peers)
      if (!p.tiebreaker) for (const r of p.bitmap.dirtyRanges()) all.push([r.offset, r.length]);
    return mergeRanges(all).map(([offset, length]) => ({ offset, length }));
  }

  get role(): 'Primary' | 'Secondary' {
    return this.#role;
  }

  // ---- roles

  /**
   * Becomes primary with this epoch (fencing token) if the rules allow; connects to the peers first.
   * `force` is the operator choosing this node's data over a reachable peer's newer or diverged data
   * (the survivor of a split-brain); quorum and epoch rules still hold.
   */
  async promote(
    epoch: number,
    waitMs = 3000,
    force = false,
    absent: string[] = [],
  ): Promise<{ ok: true } | { ok: false; reason: string }> {
    if (this.#role === 'Primary' && !this.#fenced) return { ok: true };
    const tried = new Map(this.#peers.map((p) => [p, p.link.failures]));
    for (const p of this.#peers) p.link.start();
    // Every peer must have answered (its STATE: is it primary? newer data?) or failed to connect at
    // least once: a majority alone may not include the one that is primary. A peer the caller knows
    // to be down (the cluster saw its lease end, so it fenced itself) is not waited for: a black-holed
    // address would hold the promotion until the connect timeout.
    await this.#waitFor(
      () =>
        quorum(this.#roleState()).hasQuorum &&
        this.#peers.every(
          (p) =>
            p.link.peerState !== undefined ||
            p.link.failures > (tried.get(p) ?? -1) ||
            absent.includes(p.link.o.peer.node),
        ),
      waitMs,
    );
    const behind = force ? undefined : this.#behind();
    const d = behind ? { ok: false as const, reason: behind } : promote(this.#roleState(), epoch);
    if (!d.ok) {
      for (const p of this.#peers) p.link.stop();
      return d;
    }
    const meta = this.store.load();
    const ownLeftovers = this.crashRanges().map((r): Range => [r.offset, r.length]);
    // What this replica witnessed of earlier primaries is behind it now (the check above passed): a
    // record kept while it wrote on would age out of its history and forbid its own next promotion.
    const { witnessed: _passed, ...current } = meta;
    this.store.save({ ...current, epoch, primaryOpen: true });
    // Reconciliation: what earlier primaries may have left on this replica and not on the others
    // is resynced from here to every peer. Durable in the bitmaps before the record is cleared.
    // So are the extents an unclean step-down of this node left (crashRanges()): its peers may lack them.
    const leftovers = [...promotionMarks(this.#received.record), ...ownLeftovers];
    for (const p of this.#peers)
      if (!p.tiebreaker) for (const [o, l] of leftovers) p.bitmap.markRange(o, Math.min(l, this.size - o));
    await Promise.all(this.#peers.map((p) => p.saveBitmap(this.#files)));
    if (leftovers.length > 0)
      this.log.info(
        { ranges: leftovers.length },
        "reconciliation: earlier primaries' activity-log ranges resync from here",
      );
    // The record also covers what this replica applied but has not flushed (replicas without durable
    // writes): on stable storage first, else a crash of the new primary loses blocks its peers kept
    // and nothing marks them (simulation, `full` seed 13: a secondary's unflushed write lost when it
    // crashed as the next primary).
    const durable = await this.local.flush().then(
      () => true,
      () => false,
    );
    if (durable)
      await this.#received.clear().catch((err: Error) => {
        this.log.warn({ err: err.message }, 'could not clear the received activity-log ranges');
      });
    for (const p of this.#peers) p.markedBeforePromotion = p.bitmap.dirtyBytes;
    this.#role = 'Primary';
    this.#fenced = false;
    this.#epoch = epoch;
    this.#rotated = false;
    this.#unacknowledgedLocal = false;
    this.#al.newTerm();
    this.#promotedAt = Math.floor(this.#now()); // an integer on the wire, whatever the clock
    // Our epoch on every frame from now on: a GENERATION or STATE stamped with the old one is refused.
    for (const p of this.#peers) p.link.epoch = epoch;
    // Our own unclean step-down's extents become the data now, and a peer away at this moment lacks
    // them: as a write without it, that needs a new name, else a replica resynced from us would hold
    // the same generation as that peer with different blocks and no bitmap saying so (simulation,
    // `full` seed 13 once a failed write no longer renamed the data by itself).
    if (ownLeftovers.length > 0) this.#maybeRotate();
    for (const p of this.#peers) {
      // Re-run the handshake decision now that we are primary.
      if (p.link.peerState) this.#onConnected(p, p.link.peerState);
      // A tiebreaker gets no writes: it learns our epoch from this STATE, and tells an old primary
      // still connected to it (which is then fenced), instead of lending it its vote (simulation,
      // `full` seeds 5, 9, 18: a hung agent's primary renamed and wrote with itself + the tiebreaker
      // that had voted for us).
      if (p.tiebreaker && p.link.peerState) p.link.send({ type: 'state', state: this.#localState(p) });
    }
    this.#wake();
    return { ok: true };
  }

  /** Why this replica is behind and may not be promoted (promotionRefusal, handshake.ts), if it is. */
  #behind(): string | undefined {
    const meta = this.store.load();
    const states = this.#peers.flatMap((p) => (p.link.peerState ? [p.link.peerState] : []));
    return promotionRefusal(meta, states);
  }

  /** Back to secondary: waits for nothing new (the caller has unmounted), flushes, saves bitmaps. */
  async demote(): Promise<void> {
    if (this.#role !== 'Primary') return;
    const flushed = await this.flush().then(
      () => true,
      () => false,
    );
    // A fenced primary's data is not the newest any more (another primary took over): Outdated
    // until it resyncs, so it can neither be promoted nor win a split-brain. Stored before the role
    // changes: the replica server must never show this disk as a secondary's UpToDate one.
    const fenced = this.#roleState().fenced;
    if (fenced) this.#fence();
    this.#role = 'Secondary';
    // A clean step-down (nothing in flight, all flushed above): the peers hold every write, and
    // the next primary need not reconcile this one's activity log. (Else they keep the ranges.)
    const inFlight = this.#ordered.inFlight;
    if (
      stepDown({
        flushed,
        fenced,
        inFlight,
        localSynced: true,
        unacknowledgedLocal: this.#unacknowledgedLocal,
      }).shipEmptyActivity
    )
      await this.#shipActivity([]);
    for (const p of this.#peers) p.link.stop();
    this.#wake();
    // Writes still in flight end now (refused: not primary). Their failed peer writes must be in the
    // bitmaps saved below, and their local part durable before primaryOpen stops covering the
    // activity log's extents: else a crash could leave this disk or a peer's with a block nobody
    // marks (found by the simulation, seed 3: replicas differing while "in sync").
    await this.#ordered.idle();
    const synced = await this.local.flush().then(
      () => true,
      () => false,
    );
    for (const p of this.#peers) {
      p.markUnflushedDirty();
      await p.saveBitmap(this.#files);
    }
    const end = stepDown({
      flushed,
      fenced,
      inFlight,
      localSynced: synced,
      unacknowledgedLocal: this.#unacknowledgedLocal,
    });
    if (end.clearPrimaryOpen) this.store.save({ ...this.store.load(), primaryOpen: false });
    else {
      this.#crashRanges = this.#al.hotRanges();
      this.#crashRanges = this.#uncleanRanges();
    }
    this.#wake();
  }

  // ---- BlockDevice

  read(offset: number, length: number): Promise<Buffer> {
    return this.local.read(offset, length);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (offset < 0 || offset + data.length > this.size)
      throw new DeviceError('EINVAL', 'write beyond the device');
    await this.#admit();
    await this.#al.enter(offset, data.length);
    // Overlapping writes in flight at once would reach this disk and the peers in different
    // orders (the local device runs them in parallel): each waits for the earlier ones it
    // overlaps, so every replica ends with the same bytes. Disjoint writes are not held.
    return this.#ordered.submit({ offset, length: data.length }, () => this.#replicate(offset, data));
  }

  async #replicate(offset: number, data: Buffer): Promise<void> {
    const range = this.#holds.extents(offset, data.length);
    try {
      await this.#holds.enterWrite(range);
      try {
        // Demoted meanwhile: nothing may reach a disk any more (demote waits for writes in flight).
        if (this.#role !== 'Primary') throw new DeviceError('EROFS', 'not primary');
        this.#maybeRotate();
        const peerWrites: Promise<void>[] = [];
        for (const p of this.#peers) {
          if (p.tiebreaker) continue;
          if (!p.receivesWrites) {
            p.bitmap.markRange(offset, data.length);
            continue;
          }
          // A peer that acknowledges durable writes needs no FLUSH for this one.
          if (!p.link.peerState?.durableWrites) p.unflushed.markRange(offset, data.length);
          peerWrites.push(
            p.link.write(offset, data).then(
              (status) => this.#peerAnswered(p, status, offset, data.length),
              () => {
                // The peer went away with this write in flight: it is behind now, which must show in
                // the generation before the write is acknowledged (as for a write made without it).
                p.bitmap.markRange(offset, data.length);
                this.#checkQuorum();
                this.#maybeRotate();
              },
            ),
          );
        }
        try {
          try {
            await this.local.write(offset, data);
            this.#localUnflushed = true;
          } finally {
            await Promise.all(peerWrites);
          }
          // A peer lost mid-write: the data may now be on a minority only. Hold the ack until quorum.
          if (this.#fenced) throw new DeviceError('EIO', 'fenced by a newer epoch');
          await this.#admit();
          // Named anew before the ack if a peer was lost meanwhile (mustStartGeneration), and that
          // name adopted or witnessed by every voter.
          this.#maybeRotate();
          this.#acknowledging(await this.#untilWitnessed());
        } catch (err) {
          this.#unacknowledgedLocal = true;
          this.#al.writeFailed(offset, data.length);
          throw err;
        }
      } finally {
        this.#holds.leaveWrite(range);
      }
    } finally {
      this.#al.leave(offset, data.length);
    }
  }

  /**
   * Local fdatasync and the peers' FLUSHes run in parallel. One guest fsync arrives as several
   * FSYNCs: a peer that was sent nothing since its last FLUSH went out gets no new one, the flush
   * waits for that one instead (the replica acknowledges a FLUSH only after every write before it
   * is applied and synced, so it covers every write that finished before this call).
   */
  async flush(): Promise<void> {
    const peerFlushes: Promise<void>[] = [];
    for (const p of this.#peers) {
      if (p.tiebreaker || !p.receivesWrites) continue;
      if (p.unflushed.size === 0) {
        for (const f of p.flushing) peerFlushes.push(f.done);
        continue;
      }
      const extents = p.unflushed;
      p.unflushed = new ExtentSet(this.#extentSize);
      const entry = {
        extents,
        done: p.link
          .flush()
          .then(
            (status) => {
              if (status !== AckStatus.ok) p.bitmap.markExtents(extents);
            },
            () => p.bitmap.markExtents(extents),
          )
          .finally(() => {
            p.flushing = p.flushing.filter((f) => f !== entry);
          }),
      };
      p.flushing.push(entry);
      peerFlushes.push(entry.done);
    }
    try {
      this.#localUnflushed = false;
      await this.local.flush().catch((err: Error) => {
        this.#localUnflushed = true;
        throw err;
      });
    } finally {
      await Promise.all(peerFlushes);
    }
    if (this.#role !== 'Primary') return;
    await this.#admit();
    // A peer that missed what this flush made durable (its link dropped with writes unflushed there)
    // must look older from now on: as for a write without it (simulation, `full` seed 71).
    this.#maybeRotate();
    this.#acknowledging(await this.#untilWitnessed());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#role === 'Primary') await this.demote();
    for (const p of this.#peers) p.link.stop();
    this.#closed = true;
    await this.#al.settled();
    await Promise.all(this.#peers.map((p) => p.saving));
    this.#al.close();
    this.#received.close();
    this.#wake();
    await this.local.close();
  }

  // ---- verify and split-brain resolution

  /** Compares this replica with a peer by SHA-256 digests per extent; optionally resyncs differences. */
  async verify(
    peerNode: string,
    o: { resync?: boolean; onProgress?: (doneBytes: number, totalBytes: number) => void } = {},
  ): Promise<VerifyResult> {
    const p = this.#peer(peerNode);
    const mismatches = await findDiverging({
      local: this.local,
      size: this.size,
      chunk: this.#extentSize,
      peer: peerNode,
      peerDigests: (offset, length, chunk) => p.link.digests(offset, length, chunk),
      holding: (r, fn) => this.#holds.holding(r, fn),
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    });
    if (o.resync && mismatches.length > 0) {
      for (const r of mismatches) p.bitmap.markRange(r.offset, r.length);
      this.#startResync(p);
    }
    return { peer: peerNode, bytesCompared: this.size, mismatches };
  }

  /**
   * The operator chose this node as the survivor of a split-brain with `peerNode`: the peer's
   * diverging blocks are saved to a file first (offset + data records), then overwritten from here.
   */
  async resolveSplitBrainKeepLocal(peerNode: string): Promise<{ savedTo: string; bytesSaved: number }> {
    const p = this.#peer(peerNode);
    if (this.#role !== 'Primary') throw new Error('only the primary can resolve a split-brain in its favour');
    this.#forceSurvivor.add(peerNode);
    p.discarding = undefined;
    p.link.start();
    await this.#waitFor(() => p.discarding !== undefined || p.link.state === 'Connected', 5000);
    if (!p.discarding) {
      this.#forceSurvivor.delete(peerNode);
      throw new Error(`peer ${peerNode} is not reachable or not in split-brain (${p.link.state})`);
    }
    return p.discarding;
  }

  status(): ReplicationStatus {
    const meta = this.store.load();
    const q = quorum(this.#roleState());
    return {
      role: this.#role,
      diskState: meta.diskState,
      epoch: meta.epoch,
      fenced: this.#fenced,
      generation: meta.generation,
      witnessed: meta.witnessed ?? null,
      lastAcked: meta.lastAcked ?? null,
      afterSplitBrain: this.c.afterSplitBrain,
      resyncRate: this.c.resyncRate ?? 0,
      quorum: { policy: this.c.quorum, ...q, suspendedWrites: this.#suspended },
      peers: this.#peers.map((p) => p.status(this.#now())),
    };
  }

  /**
   * Blocks (bitmap extents) this node wrote as primary that `peer` does not have, for the after-
   * split-brain policies; the ReplicaServer reports it in its STATE (ReplicaServerOptions.divergence).
   * Zero once this node has taken another primary's data since (its own writes are gone); undefined
   * for an unknown peer.
   */
  changedBlocks(peer: string): number | undefined {
    const p = this.#peers.find((x) => x.link.node === peer);
    if (!p) return undefined;
    if (this.#role !== 'Primary' && this.#ownGeneration !== undefined) {
      if (this.store.load().generation.current !== this.#ownGeneration) return 0;
    }
    return p.bitmap.dirtyExtents;
  }

  /**
   * The data generation this node started as primary (file `own-generation`): while the disk still
   * carries it, the per-peer bitmaps describe what this node wrote on its own.
   */
  #rememberOwnGeneration(current: string): void {
    this.#ownGeneration = current;
    this.#files.replaceSync('own-generation', Buffer.from(`${current}\n`));
  }

  /**
   * After a crash as primary, until this node holds a primary's data again (primaryOpen cleared):
   * the extents its activity log held, which may carry writes nobody acknowledged.
   */
  crashRanges(): ByteRange[] {
    return this.#role === 'Secondary' && this.store.load().primaryOpen ? this.#crashRanges : [];
  }

  /**
   * The operator gives up waiting for quorum (`volume down --force`): with `io-error`, writes that
   * were suspended fail now, and new ones fail at once, so the filesystem above can be unmounted.
   */
  setQuorumPolicy(policy: QuorumPolicy): void {
    this.c.quorum = policy;
    this.#wake();
  }

  /**
   * `volume adjust`: policies and the resync cap change while running. A new cap paces a running
   * resync from now on; a new after-split-brain policy applies at the next handshake.
   */
  adjust(s: { quorum: QuorumPolicy; afterSplitBrain: AfterSplitBrainPolicy; resyncRate: number }): void {
    this.c.afterSplitBrain = s.afterSplitBrain;
    this.c.resyncRate = s.resyncRate;
    this.setQuorumPolicy(s.quorum);
  }

  /**
   * A node joins the volume (`volume adjust` with a new peer): its bitmap starts clean, and the
   * handshake's generation ids decide what it needs (a fresh disk: a full sync). A primary connects
   * to it at once; quorum counts it from now on.
   */
  addPeer(peer: PeerAddress): void {
    if (this.#closed) throw new Error('the device is closed');
    if (peer.node === this.c.node) throw new Error(`${peer.node} is this node`);
    if (this.#peers.some((p) => p.link.node === peer.node))
      throw new Error(`peer ${peer.node} is already known`);
    this.#files.remove(bitmapFile(peer.node));
    const p = this.#newPeer(peer, false);
    this.#peers.push(p);
    if (this.#role === 'Primary') p.link.start();
    this.#wake();
  }

  /**
   * A node leaves the volume: its link stops (writes in flight to it fail over to its bitmap, which
   * is then forgotten with it) and quorum no longer counts it.
   */
  async removePeer(node: string): Promise<void> {
    const p = this.#peer(node);
    p.link.stop();
    this.#peers = this.#peers.filter((x) => x !== p);
    await p.saving;
    this.#files.remove(bitmapFile(node));
    this.#wake();
  }

  /** Test and admin hook: drop one peer's connection (it reconnects with backoff). */
  dropPeer(node: string): void {
    this.#peer(node).link.drop('dropped by request');
  }

  // ---- internals

  /** A peer's replication state: its bitmap (loaded, or clean for a peer never seen) and its link. */
  #newPeer(peer: PeerAddress, primaryOpen: boolean | undefined): PeerReplica {
    const file = bitmapFile(peer.node);
    const bitmap =
      this.#files.read(file) !== undefined || primaryOpen
        ? loadBitmapFrom(this.#files, file, this.size, this.#extentSize).bitmap
        : new DirtyBitmap(this.size, this.#extentSize);
    // After a crash as primary, every extent the activity log held may have missed any peer.
    if (primaryOpen) for (const r of this.#crashRanges) bitmap.markRange(r.offset, r.length);
    const link: PeerLink = new PeerLink({
      node: this.c.node,
      volumeUuid: this.c.volumeUuid,
      secret: this.c.secret,
      peer,
      log: this.log,
      localState: () => this.#localState(data),
      onConnected: (_link, st) => this.#onConnected(data, st),
      onDisconnected: () => this.#onDisconnected(data),
      onStateChanged: (_link, st) => this.#onPeerStateChanged(st),
      onFailure: () => this.#wake(),
      ...(this.c.now ? { now: this.c.now } : {}),
      clock: this.#clock,
      ...(this.c.transport ? { transport: this.c.transport } : {}),
    });
    const data = new PeerReplica(link, bitmap);
    return data;
  }

  #peer(node: string): PeerReplica {
    const p = this.#peers.find((x) => x.link.node === node);
    if (!p) throw new Error(`no peer named ${node}`);
    return p;
  }

  #roleState(): ReplicaRoleState {
    const meta = this.store.load();
    return {
      role: this.#role,
      diskState: meta.diskState,
      epoch: meta.epoch,
      fenced: this.#fenced || (this.#role === 'Primary' && meta.epoch > this.#epoch),
      quorumPolicy: this.c.quorum,
      peers: this.#peers.map((p) => p.view()),
    };
  }

  /** Our STATE as `to` sees it: changedBlocks counts what we wrote that this peer does not have. */
  #localState(to?: PeerReplica): PeerState {
    const meta = this.store.load();
    let changed = 0;
    if (to) changed = to.bitmap.dirtyExtents;
    else for (const p of this.#peers) changed = Math.max(changed, p.bitmap.dirtyExtents);
    return {
      node: this.c.node,
      role: this.#role,
      diskState: meta.diskState,
      generation: meta.generation,
      crashedPrimary: false,
      epoch: meta.epoch,
      size: this.size,
      changedBlocks: changed,
      promotedAt: this.#promotedAt,
    };
  }

  async #admit(): Promise<void> {
    for (;;) {
      if (this.#closed) throw new DeviceError('EIO', 'device closed');
      if (this.#quorumCheck) {
        await this.#quorumCheck;
        continue;
      }
      const a = admitWrite(this.#roleState());
      if (a.kind === 'proceed') return;
      if (a.kind === 'fail') throw new DeviceError(a.errno, a.reason);
      this.#suspended++;
      try {
        await new Promise<void>((resolve) => this.#stateWaiters.push(resolve));
      } finally {
        this.#suspended--;
      }
    }
  }

  #wake(): void {
    for (const w of this.#stateWaiters.splice(0)) w();
  }

  /** Waits until `cond` holds (checked at every state change) or `ms` have passed. */
  async #waitFor(cond: () => boolean, ms: number): Promise<void> {
    const end = this.#clock.now() + ms;
    while (!cond() && this.#clock.now() < end) {
      await new Promise<void>((resolve) => {
        const timer = this.#clock.setTimer(resolve, end - this.#clock.now());
        this.#stateWaiters.push(() => {
          timer.cancel();
          resolve();
        });
      });
    }
  }

  #now(): number {
    return this.c.now ? this.c.now() : this.#clock.now();
  }

  /** Extents leave the activity log: what was written into them is made durable first. */
  async #persistForEviction(): Promise<void> {
    // The log forgets extents whose writes completed: those writes must be on stable storage here
    // first, or a crash could lose them while a peer kept them and nothing says the extent differs
    // (found by the simulation, seed 1). Needed only when a write completed unflushed.
    if (this.#localUnflushed) {
      this.#localUnflushed = false;
      await this.local.flush().catch((err: Error) => {
        this.#localUnflushed = true;
        throw err;
      });
    }
    await Promise.all(
      this.#peers
        // Extents written to a peer but not flushed there: if both crash, the peer may have lost them
        // while the log no longer names them. They are saved as dirty while they are (found by the
        // simulation, seed 1: a torn block on a replica counted as in sync).
        .filter((p) => p.bitmap.changedSincePersist || p.unflushed.size > 0 || p.flushing.length > 0)
        .map((p) => p.saveBitmap(this.#files, true)),
    );
  }

  /**
   * Sends the activity-log ranges to the data peers that receive writes (or to `to`); resolves when
   * each has them durably or is gone. A peer that refuses them is dropped (it gets no more writes
   * on this connection; they are marked in its bitmap).
   */
  async #shipActivity(ranges: Range[], to: PeerReplica[] = this.#peers): Promise<void> {
    await Promise.all(
      to
        .filter((p) => !p.tiebreaker && p.link.state !== 'StandAlone' && p.link.peerState !== undefined)
        .map((p) =>
          p.link.activity(ranges).then(
            (status) => {
              if (status !== AckStatus.ok)
                p.link.drop(`peer refused the activity-log ranges (status ${status})`);
            },
            () => undefined,
          ),
        ),
    );
  }

  // ---- reconciliation among survivors: the record this replica keeps as a secondary (the
  // ReplicaServer calls these; see ReplicaServerOptions.divergence)

  receiveActivity(from: ActivitySource, ranges: Range[], unflushed: Range[]): Promise<void> {
    return this.#received.receive(from, ranges, unflushed);
  }

  reconciledByPrimary(by: ActivitySource): Promise<void> {
    return this.#received.reconciled(by);
  }

  activityReport(): ActivityReport | undefined {
    return this.#role === 'Secondary' ? activityReport(this.#received.record) : undefined;
  }

  /** The first write while some data peer is not in sync starts a new data generation. */
  #maybeRotate(): void {
    const allInSync = this.#peers.every((p) => p.inSync);
    // A fenced primary acknowledges nothing: no quorum for it.
    const rs = this.#roleState();
    const hasQuorum = !rs.fenced && quorum(rs).hasQuorum && !this.#quorumCheck;
    if (!mustStartGeneration({ rotated: this.#rotated, allInSync, hasQuorum })) return;
    const meta = this.store.load();
    const generation = startNewGeneration(meta.generation, randomGenerationId(this.c.random ?? randomBytes));
    this.store.save({ ...meta, generation });
    this.#rememberOwnGeneration(generation.current);
    this.#rotated = true;
    this.log.info({ generation: generation.current }, 'new data generation (a peer is not in sync)');
    // Peers in sync take the new name too, before the write that follows on the same connection;
    // the other voters witness it (#untilWitnessed).
    for (const p of this.#peers) this.#name(p);
  }

  /** Tells a voter the data's current name: a peer in sync adopts it, another one witnesses it. */
  #name(p: PeerReplica): void {
    const { generation } = this.store.load();
    if (p.holdsOurData) p.link.send({ type: 'state', state: this.#localState(p) });
    else if (p.witnesses) p.link.send({ type: 'generation', generation });
    else return;
    p.named = generation.current;
  }

  /**
   * Nothing is acknowledged (a write, a flush) in a generation before every voter has adopted or
   * witnessed it: else, this node dead, a replica that missed what was acknowledged in it could be
   * promoted with the votes of ones that cannot tell (a tiebreaker; a replica still resyncing;
   * one in sync whose STATE was still on the wire: simulation, `full` seeds 1, 16 and 71 once the
   * model promoted as the manager does). Held, whatever the quorum policy, for one round trip after
   * each new generation.
   */
  async #untilWitnessed(): Promise<string> {
    for (;;) {
      const current = this.store.load().generation.current;
      let all = true;
      for (const p of this.#peers) {
        if (!p.witnesses) continue;
        const st = p.link.peerState;
        if (st && (st.generation.current === current || st.witnessed?.current === current)) continue;
        all = false;
        if (p.named !== current) this.#name(p);
      }
      if (all) return current;
      await new Promise<void>((resolve) => this.#stateWaiters.push(resolve));
      if (this.#fenced) throw new DeviceError('EIO', 'fenced by a newer epoch');
      await this.#admit();
    }
  }

  /**
   * Before the first acknowledgement in a generation, that generation is durably `lastAcked`: what
   * this node writes in a later one of its own is known to be unacknowledged until it acknowledges
   * there, and a split-brain with such a side resolves by itself (handshake.ts).
   */
  #acknowledging(current: string): void {
    if (this.#lastAcked === current) return;
    const meta = this.store.load();
    if (meta.lastAcked !== current) this.store.save({ ...meta, lastAcked: current });
    this.#lastAcked = current;
  }

  #peerAnswered(p: PeerReplica, status: number, offset: number, length: number): void {
    if (status === AckStatus.ok) return;
    p.bitmap.markRange(offset, length);
    if (status === AckStatus.staleEpoch) {
      this.#fence();
      this.log.warn({ peer: p.link.node }, 'peer refused our epoch: fenced, refusing further writes');
      this.#wake();
    }
    this.#maybeRotate();
    p.link.drop(`peer refused a write (status ${status})`);
  }

  /**
   * A peer was lost while primary: the other links may be as dead and not timed out yet (a partition
   * cuts them at once; their timeouts fire apart), so a vote counts again only once its peer answers
   * a fresh ping; one that does not within QUORUM_CHECK_MS is dropped. Until then no write is
   * admitted or acknowledged and the data is not renamed (simulation, `full` seed 14: an old primary
   * acknowledged with itself and a tiebreaker that had already voted for the new primary).
   */
  #checkQuorum(): void {
    if (this.#role !== 'Primary' || this.#quorumCheck || this.c.quorum === 'off') return;
    const voting = this.#peers.filter(
      (p) => p.link.state === 'Connected' || p.link.state === 'SyncSource' || p.link.state === 'SyncTarget',
    );
    this.#quorumCheck = Promise.all(
      voting.map((p) =>
        p.link.answered(QUORUM_CHECK_MS).then((heard) => {
          if (!heard) p.link.drop('no answer to a quorum check after another peer was lost');
        }),
      ),
    ).then(() => {
      this.#quorumCheck = undefined;
      this.#wake();
    });
  }

  #onDisconnected(p: PeerReplica): void {
    this.#checkQuorum();
    p.markUnflushedDirty();
    p.resync = undefined;
    p.named = undefined;
    if (this.#role === 'Primary' && !p.tiebreaker) this.#rotated = false;
    this.#wake();
  }

  /** A peer's STATE carries a newer epoch than ours: remember it; as primary, we are fenced. */
  #observePeerEpoch(peer: PeerState): void {
    // Compared with our own promotion's epoch too: our replica server may already have stored the
    // newer epoch (the new primary dialled us), and that must fence us all the same.
    if (peer.epoch > this.store.load().epoch || (this.#role === 'Primary' && peer.epoch > this.#epoch)) {
      const meta = this.store.load();
      if (peer.epoch > meta.epoch) this.store.save({ ...meta, epoch: peer.epoch });
      if (this.#role === 'Primary' && !this.#fenced) {
        this.#fence();
        this.log.warn({ peer: peer.node, epoch: peer.epoch }, 'peer has a newer epoch: fenced');
      }
    }
  }

  /** A newer primary exists: nothing more is acknowledged here, and the disk is Outdated at once. */
  #fence(): void {
    this.#fenced = true;
    const meta = this.store.load();
    const diskState = diskStateWhenFenced(meta.diskState);
    if (diskState !== meta.diskState) this.store.save({ ...meta, diskState });
  }

  /** A later STATE on a live link (an answer, or a change the peer pushed): PeerLink stored it. */
  #onPeerStateChanged(peer: PeerState): void {
    this.#observePeerEpoch(peer);
    this.#reconcileLate(peer);
    this.#wake();
  }

  /**
   * An earlier primary's activity-log ranges that a replica recorded after our handshake with it (that
   * primary still ran: a hung agent, its writes not yet refused for want of our epoch) resync from here
   * too, as the handshake's would have (simulation, `full` seed 34: a replica kept such a write).
   */
  #reconcileLate(peer: PeerState): void {
    const key = JSON.stringify(peer.activity ?? null);
    if (this.#activitySeen.get(peer.node) === key) return;
    this.#activitySeen.set(peer.node, key);
    if (this.#role !== 'Primary' || this.#fenced || !peer.activity) return;
    // Only another node's record (an earlier primary still running): ours are our own writes, which
    // the handshake and our promotion took into account; taking them here resynced our log's hot set
    // again after each of its commits (24 MiB after a fresh join's full sync, volume-adjust.test.ts).
    if (peer.activity.from === this.c.node) return;
    const p = this.#peers.find((x) => x.link.node === peer.node);
    if (!p || p.tiebreaker || (p.link.state !== 'Connected' && p.link.state !== 'SyncSource')) return;
    const marks = reconcileMarks({ node: this.c.node, epoch: this.#epoch }, peer.activity, this.size);
    if (marks.length === 0) return;
    for (const [o, l] of marks) p.bitmap.markRange(o, Math.min(l, this.size - o));
    this.log.info(
      { peer: peer.node, ranges: marks.length, from: peer.activity.from, epoch: peer.activity.epoch },
      'reconciliation: ranges recorded after the handshake resync from here',
    );
    void p.saveBitmap(this.#files).then(
      () => this.#startResync(p),
      () => undefined,
    );
  }

  #onConnected(p: PeerReplica, peer: PeerState): void {
    this.#observePeerEpoch(peer);
    this.#activitySeen.set(peer.node, JSON.stringify(peer.activity ?? null));
    const meta = this.store.load();
    const a = decideHandshake({
      primary: this.#role === 'Primary',
      size: this.size,
      tiebreaker: p.tiebreaker,
      quorum: this.c.quorum,
      afterSplitBrain: this.c.afterSplitBrain,
      local: { generation: meta.generation, diskState: meta.diskState, crashedPrimary: false },
      self: { node: this.c.node, epoch: this.#epoch },
      localSide: {
        changedBlocks: p.bitmap.dirtyExtents,
        promotedAt: this.#promotedAt,
        current: meta.generation.current,
      },
      outOfSyncBytes: p.bitmap.dirtyBytes,
      markedBeforePromotion: p.markedBeforePromotion,
      forcedSurvivor: this.#forceSurvivor.has(peer.node),
      peer,
    });
    if (a.kind !== 'observe' && a.kind !== 'retry')
      this.log.info(
        {
          peer: peer.node,
          decision: a.sync ?? a.kind,
          reason: a.reason,
          ...(a.kind === 'resync' && a.afterNone?.resync
            ? { resyncBytes: a.afterNone.bytes, resyncReason: a.afterNone.reason }
            : {}),
        },
        'peer handshake decision',
      );
    switch (a.kind) {
      case 'observe':
        break;
      case 'none':
        // Before any write reaches it on this connection: where this primary may be writing
        // (an empty log needs nothing: the first write into it commits and ships).
        if (!this.#al.empty) void this.#shipActivity(this.#al.ranges(), [p]);
        break;
      case 'retry':
        // Usually transient (an old primary about to step down): retry with backoff, do not park.
        p.link.lastError = a.reason;
        p.link.drop(a.reason);
        break;
      case 'park':
        p.link.park(a.state, a.reason);
        break;
      case 'resync':
        for (const r of a.mark) p.bitmap.markRange(r.offset, r.length);
        if (a.full) p.bitmap.setAll();
        void this.#shipActivity(this.#al.ranges(), [p]);
        this.#startResync(p);
        break;
      case 'discard': {
        if (a.automatic) this.log.warn({ peer: peer.node }, a.reason);
        void this.#shipActivity(this.#al.ranges(), [p]);
        this.#forceSurvivor.delete(peer.node);
        // Automatic discards retry at the next connection; an operator's choice waits for the operator.
        const automatic = a.automatic;
        p.startSyncing();
        p.discarding = this.#discardPeer(p);
        p.discarding.catch((err: Error) =>
          automatic
            ? p.link.drop(`split-brain resolution interrupted: ${err.message}`)
            : p.link.park('SplitBrain', `split-brain resolution failed: ${err.message}`),
        );
        break;
      }
    }
    this.#wake();
  }

  /** Saves the peer's diverging extents (found by digest) to a file, then resyncs them from here. */
  async #discardPeer(p: PeerReplica): Promise<{ savedTo: string; bytesSaved: number }> {
    p.startSyncing();
    p.savingLoserBlocks = true;
    try {
      return await this.#saveDiverging(p);
    } finally {
      p.savingLoserBlocks = false;
      this.#startResync(p);
    }
  }

  async #saveDiverging(p: PeerReplica): Promise<{ savedTo: string; bytesSaved: number }> {
    const v = await this.verify(p.link.node);
    const name = savedBlocksName(p.link.node, this.#now());
    const file = this.#files.path(name);
    const bytesSaved = await saveDiverging({
      ranges: v.mismatches,
      chunk: this.#extentSize,
      peer: p.link.node,
      read: (offset, length) => p.link.read(offset, length),
      appendSync: (record) => this.#files.appendSync(name, record),
      saved: (offset, length) => p.bitmap.markRange(offset, length),
    });
    this.log.warn({ peer: p.link.node, file, bytesSaved }, 'split-brain: discarded peer blocks saved');
    return { savedTo: file, bytesSaved };
  }

  #startResync(p: PeerReplica): void {
    if (p.resyncRunning) return;
    p.resyncRunning = true;
    p.startSyncing();
    this.#resync(p)
      .catch((err: Error) => {
        this.log.warn({ peer: p.link.node, err: err.message }, 'resync interrupted');
      })
      .finally(() => {
        p.resyncRunning = false;
        this.#wake();
      });
  }

  async #resync(p: PeerReplica): Promise<void> {
    await resyncPeer(
      {
        extentSize: this.#extentSize,
        size: this.size,
        local: this.local,
        clock: this.#clock,
        now: () => this.#now(),
        resyncRate: () => this.c.resyncRate ?? 0,
        writesWaiting: () => this.#holds.writesWaiting(),
        holding: (r, fn) => this.#holds.holding(r, fn),
      },
      p,
    );
    const meta = this.store.load();
    if (this.#peers.every((x) => x.inSync)) {
      this.store.save({ ...meta, generation: clearBitmapGeneration(meta.generation) });
      this.#rotated = false;
    }
    // The peer now holds our data: it takes our generation (this STATE) and is UpToDate.
    p.link.send({ type: 'state', state: this.#localState(p) });
    await p.saveBitmap(this.#files);
    this.log.info({ peer: p.link.node, ...p.lastResync }, 'resync finished');
  }
}
