/**
 * The resync loop: sends a peer the extents its bitmap marks, several ranges on the wire at once,
 * paced by the resync cap, yielding to application writes, then one FLUSH; on success the peer is
 * in sync (PeerReplica.synced) and `lastResync` says what it took. The device does the rest (the
 * generation, the STATE that tells the peer it holds our data, the bitmap save).
 */
import type { Clock } from '../../lib/clock.ts';
import type { BlockDevice } from '../block-device.ts';
import { type ByteRange, ExtentSet } from './bitmap.ts';
import { PeerGone } from './peer-link.ts';
import type { PeerReplica, ResyncProgress } from './peer-replica.ts';
import { AckStatus } from './protocol.ts';

/** Resync ranges (up to 16 bitmap extents, 1 MiB by default, each) on the wire at once. */
const RESYNC_DEPTH = 8;

/** What the loop needs of the device. */
export interface ResyncContext {
  extentSize: number;
  size: number;
  local: BlockDevice;
  clock: Clock;
  now(): number;
  /** The cap in bytes/s (0 = none), read as it runs (volume adjust changes it). */
  resyncRate(): number;
  /** Application writes are in flight: the loop yields to them. */
  writesWaiting(): boolean;
  /** Runs `fn` with the extents of `r` held against application writes. */
  holding<T>(r: ByteRange, fn: () => Promise<T>): Promise<T>;
}

export async function resyncPeer(ctx: ResyncContext, p: PeerReplica): Promise<void> {
  const now = () => ctx.now();
  const startedAt = now();
  const progress: ResyncProgress & { startedAt: number } = {
    totalBytes: p.bitmap.dirtyBytes,
    doneBytes: 0,
    bytesPerSecond: 0,
    etaSeconds: undefined,
    startedAt,
  };
  p.resync = progress;
  const maxSpan = 16 * ctx.extentSize;
  // Pacing restarts from "now" when the cap changes (volume adjust) while this resync runs.
  let pace = { rate: ctx.resyncRate(), at: startedAt, bytes: 0 };
  // Dirty bytes without a scan of the whole bitmap (the last extent may be short: cosmetic).
  const dirtyBytes = () => Math.min(ctx.size, p.bitmap.dirtyExtents * ctx.extentSize);
  // Several ranges on the wire at once: one at a time would wait a round trip per MiB.
  const inFlight = new Set<Promise<void>>();
  let failure: Error | undefined;
  while (p.bitmap.dirtyExtents > 0) {
    // One pass over the bitmap; ranges still dirty after it (none, unless new bits) get another.
    for (const r of p.bitmap.dirtyRanges(maxSpan)) {
      if (failure) throw failure;
      if (p.link.state !== 'SyncSource') throw new PeerGone(p.link.node, 'connection lost during resync');
      const job: Promise<void> = resyncRange(ctx, p, r).then(
        () => {
          inFlight.delete(job);
          progress.doneBytes += r.length;
          const done = progress.doneBytes;
          const elapsed = Math.max(1, now() - startedAt) / 1000;
          progress.totalBytes = Math.max(progress.totalBytes, done + dirtyBytes());
          progress.bytesPerSecond = Math.round(done / elapsed);
          progress.etaSeconds =
            progress.bytesPerSecond > 0 ? Math.ceil(dirtyBytes() / progress.bytesPerSecond) : undefined;
        },
        (err: Error) => {
          inFlight.delete(job);
          failure ??= err;
        },
      );
      inFlight.add(job);
      if (inFlight.size >= RESYNC_DEPTH) await Promise.race(inFlight);
      for (;;) {
        const rate = ctx.resyncRate();
        if (rate !== pace.rate) pace = { rate, at: now(), bytes: progress.doneBytes };
        if (rate <= 0) break;
        const sent = progress.doneBytes - pace.bytes + inFlight.size * maxSpan;
        const ahead = sent / rate - (now() - pace.at) / 1000;
        if (ahead <= 0) break;
        // In slices, so that a raised cap takes effect within a fraction of a second.
        await ctx.clock.sleep(Math.min(ahead * 1000, 250));
      }
      // Application writes first: yield when they are waiting.
      if (ctx.writesWaiting()) await new Promise((res) => setImmediate(res));
    }
    await Promise.all(inFlight);
    if (failure) throw failure;
  }
  // The FLUSH covers what was sent before it; writes sent after it stay unflushed.
  const covered = p.unflushed;
  p.unflushed = new ExtentSet(ctx.extentSize);
  const flushed = await p.link.flush().catch(() => AckStatus.ioError);
  if (flushed !== AckStatus.ok) {
    p.bitmap.markExtents(covered);
    throw new Error('peer could not flush after resync');
  }
  p.synced();
  const endedAt = now();
  p.lastResync = {
    bytes: progress.doneBytes,
    ms: endedAt - startedAt,
    endedAt: new Date(endedAt).toISOString(),
  };
}

/**
 * Sends one dirty range to a peer. The extents are held meanwhile: application writes into them
 * wait, and in-flight ones finish first, so the block we read is not older than one the peer
 * already got directly.
 */
async function resyncRange(ctx: ResyncContext, p: PeerReplica, r: ByteRange): Promise<void> {
  const first = Math.floor(r.offset / ctx.extentSize);
  const last = Math.floor((r.offset + r.length - 1) / ctx.extentSize);
  await ctx.holding(r, async () => {
    const data = await ctx.local.read(r.offset, r.length);
    const status = await p.link.write(r.offset, data, true);
    if (status !== AckStatus.ok) {
      p.link.drop(`resync write refused (status ${status})`);
      throw new Error(`peer refused resync write (status ${status})`);
    }
    p.unflushed.markRange(r.offset, r.length);
    for (let e = first; e <= last; e++) p.bitmap.clearExtent(e);
  });
}
