/**
 * What the primary tracks of one peer (in the spirit of etcd-io/raft's tracker/progress.go): the
 * extents it misses (bitmap), the ones written to it but not flushed there, its resync, and its
 * link. Changes of the peer's connection state as the device sees it (syncing, in sync) happen here.
 */
import { type DirtyBitmap, ExtentSet, saveBitmapTo } from './bitmap.ts';
import type { PeerLink } from './peer-link.ts';
import { type DiskStateSource, diskStateReport } from './peer-report.ts';
import { type ConnectionState, connectionVotes, type PeerView } from './role.ts';
import type { StateFiles } from './state-files.ts';
import { WITNESSED_SINCE } from './version.ts';

export interface ResyncProgress {
  totalBytes: number;
  doneBytes: number;
  bytesPerSecond: number;
  etaSeconds: number | undefined;
}

export interface PeerStatus {
  node: string;
  address: string;
  tiebreaker: boolean;
  connection: ConnectionState;
  diskState: string | undefined;
  /**
   * How diskState (and role) was learnt: the connection's first STATE, the peer's answer to ours,
   * or a change it pushed; `none` while not connected. On a live link it is the peer's current
   * state whatever its age (the peer pushes every durable change); the age says since when.
   */
  diskStateSource: DiskStateSource;
  /** When it was received (for `none`: when the link went down or the daemon started), ISO 8601. */
  diskStateUpdatedAt: string;
  diskStateAgeMs: number;
  role: string | undefined;
  /** The peer acknowledges writes once durable (its STATE says so): FSYNC sends it no FLUSH. */
  durableWrites: boolean | undefined;
  outOfSyncBytes: number;
  resync: ResyncProgress | undefined;
  /** The last resync to this peer: bytes, duration, and when it ended (ISO 8601). */
  lastResync: { bytes: number; ms: number; endedAt: string } | undefined;
  lastError: string;
  bytesSent: number;
  /** The replication protocol version negotiated with this peer (version.ts), while connected. */
  protocolVersion: number | undefined;
}

/** The engine file that keeps a peer's bitmap. */
export function bitmapFile(node: string): string {
  return `bitmap-${node.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
}

export class PeerReplica {
  readonly link: PeerLink;
  bitmap: DirtyBitmap;
  /** Extents written to the peer since its last FLUSH was sent: lost if it crashes before flushing. */
  unflushed: ExtentSet;
  /** FLUSHes on the wire, with the extents each one covers (they become dirty if it fails). */
  flushing: Array<{ extents: ExtentSet; done: Promise<void> }> = [];
  /** The last bitmap save of this peer (saves are chained so the newest content lands last). */
  saving: Promise<void> = Promise.resolve();
  resync: (ResyncProgress & { startedAt: number }) | undefined;
  resyncRunning = false;
  lastResync: { bytes: number; ms: number; endedAt: string } | undefined;
  /** Out-of-sync bytes already marked when this node last became primary (for the handshake log). */
  markedBeforePromotion = 0;
  discarding: Promise<{ savedTo: string; bytesSaved: number }> | undefined;
  /** A split-brain loser's blocks are being saved: new writes only mark its bitmap meanwhile. */
  savingLoserBlocks = false;
  /** The current generation id last sent to it (STATE or GENERATION) while primary. */
  named: string | undefined;

  constructor(link: PeerLink, bitmap: DirtyBitmap) {
    this.link = link;
    this.bitmap = bitmap;
    this.unflushed = new ExtentSet(bitmap.extentSize);
  }

  get node(): string {
    return this.link.node;
  }

  get tiebreaker(): boolean {
    return this.link.o.peer.tiebreaker ?? false;
  }

  /** Connected, nothing to resync. (A tiebreaker counts as in sync: it holds no data.) */
  get inSync(): boolean {
    return this.tiebreaker || (this.link.state === 'Connected' && this.bitmap.dirtyExtents === 0);
  }

  /** It adopts our generation from a STATE: a data peer connected and in sync (no block marked for it). */
  get holdsOurData(): boolean {
    return !this.tiebreaker && this.link.state === 'Connected' && this.bitmap.dirtyExtents === 0;
  }

  /** A voter that speaks GENERATION and `witnessed` (protocol version 5). */
  get witnesses(): boolean {
    return connectionVotes(this.link.state) && (this.link.protocolVersion ?? 0) >= WITNESSED_SINCE;
  }

  /** Application writes go to it (else they only mark its bitmap). */
  get receivesWrites(): boolean {
    return !this.savingLoserBlocks && (this.link.state === 'Connected' || this.link.state === 'SyncSource');
  }

  /** A resync (or the saving of a split-brain loser's blocks) to it begins. */
  startSyncing(): void {
    this.link.state = 'SyncSource';
  }

  /** Its resync is over: it holds our data. */
  synced(): void {
    this.link.state = 'Connected';
    this.resync = undefined;
    this.markedBeforePromotion = 0;
  }

  /** Extents written to it but not known flushed there. */
  *unflushedExtents(): Iterable<number> {
    yield* this.unflushed;
    for (const f of this.flushing) yield* f.extents;
  }

  /** Saves its bitmap without blocking; saves of one peer run in order (latest content last). */
  saveBitmap(files: StateFiles, withUnflushed = false): Promise<void> {
    const job = this.saving.then(() =>
      saveBitmapTo(
        files,
        bitmapFile(this.node),
        this.bitmap,
        withUnflushed ? this.unflushedExtents() : undefined,
      ),
    );
    this.saving = job.catch(() => undefined);
    return job;
  }

  /** The link is gone or stopped: what it may not have flushed is dirty now. */
  markUnflushedDirty(): void {
    this.bitmap.markExtents(this.unflushedExtents());
    this.unflushed = new ExtentSet(this.bitmap.extentSize);
  }

  view(): PeerView {
    return {
      id: this.node,
      tiebreaker: this.tiebreaker,
      connection: this.link.state,
      diskState: this.link.peerState?.diskState,
      role: this.link.peerState?.role,
    };
  }

  status(now: number): PeerStatus {
    const l = this.link;
    return {
      node: l.node,
      address: `${l.o.peer.host}:${l.o.peer.port}`,
      tiebreaker: this.tiebreaker,
      connection: l.state,
      diskState: l.peerState?.diskState,
      ...diskStateReport(l.peerStateSource, l.peerStateAt, now),
      role: l.peerState?.role,
      durableWrites: l.peerState && !this.tiebreaker ? !!l.peerState.durableWrites : undefined,
      outOfSyncBytes: this.bitmap.dirtyBytes,
      resync: this.resync && {
        totalBytes: this.resync.totalBytes,
        doneBytes: this.resync.doneBytes,
        bytesPerSecond: this.resync.bytesPerSecond,
        etaSeconds: this.resync.etaSeconds,
      },
      lastResync: this.lastResync,
      lastError: l.lastError,
      bytesSent: l.bytesSent,
      protocolVersion: l.protocolVersion,
    };
  }
}
