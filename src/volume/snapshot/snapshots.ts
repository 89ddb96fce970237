/**
 * A volume's snapshots in its daemon: the copy-on-write device the primary's FUSE file is served
 * through, a read-only device per snapshot, create/delete/list/rollback, and dropping a snapshot
 * that cannot keep up. Decisions come from plan.ts; files from store.ts.
 *
 * Consistency: a write waits until the old contents of every chunk it overwrites are durable in
 * every snapshot that did not hold them (and their map records), so a snapshot never sees a newer
 * block, also after a crash. A copy that fails (disk full, I/O error) drops that snapshot with a
 * logged event; the volume's write goes on.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { type BlockDevice, DeviceError } from '../block-device.ts';
import {
  checkSnapshotName,
  DEFAULT_CHUNK_SIZE,
  SNAPSHOT_FORMAT_VERSION,
  type SnapshotInfo,
} from './format.ts';
import { type ChunkCopy, chunkRange, planCopies, planRead, planRollback } from './plan.ts';
import { SnapshotStore } from './store.ts';

/** What `volume snapshot list --json` shows of one snapshot. */
export interface SnapshotListing {
  name: string;
  createdAt: string;
  chunkSize: number;
  /** Chunks whose old contents were copied, and their bytes. */
  chunksCopied: number;
  bytesCopied: number;
  /** Space the copy-on-write file takes on disk. */
  cowBytes: number;
  /** Its read-only device file while exposed (`volume snapshot mount`). */
  deviceFile?: string;
}

export interface SnapshotsOptions {
  /** `VOLUME/snapshots`. */
  dir: string;
  volume: { uuid: string; size: number };
  /** The local data, where the old contents of a chunk are read before it is overwritten. */
  base: BlockDevice;
  log: Logger;
}

export class Snapshots {
  private readonly o: SnapshotsOptions;
  private readonly stores = new Map<string, SnapshotStore>();
  /** Chunks being copied: a later write or snapshot read of one waits for its copy. */
  private readonly copying = new Map<number, Promise<void>>();
  /** Writes in progress through the copy-on-write device (create waits until there are none). */
  private writesInFlight = 0;
  private drained: (() => void) | undefined;
  /** Snapshots whose files were made ahead of their create (`prepare`), with their info. */
  private readonly prepared = new Map<string, { tmp: string; info: SnapshotInfo }>();

  private constructor(o: SnapshotsOptions) {
    this.o = o;
  }

  /** Loads every snapshot left by an earlier daemon; one that cannot be read is logged and set aside. */
  static async load(o: SnapshotsOptions): Promise<Snapshots> {
    const s = new Snapshots(o);
    mkdirSync(o.dir, { recursive: true });
    for (const entry of readdirSync(o.dir, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const path = join(o.dir, entry.name);
      // A create that crashed half-way: never acknowledged, no writes depend on it.
      if (entry.name.endsWith('.creating')) {
        rmSync(path, { recursive: true, force: true });
        continue;
      }
      if (checkSnapshotName(entry.name) !== undefined) continue;
      try {
        const store = await SnapshotStore.open(path, o.volume);
        if (store.info.chunkSize !== DEFAULT_CHUNK_SIZE) {
          await store.close();
          throw new Error(
            `chunk size ${store.info.chunkSize}: this cvserver copies ${DEFAULT_CHUNK_SIZE}-byte chunks`,
          );
        }
        s.stores.set(entry.name, store);
      } catch (err) {
        o.log.error(
          { event: 'snapshot-unreadable', snapshot: entry.name, reason: errorMessage(err) },
          'snapshot cannot be loaded: ignored (delete it with `volume snapshot delete`)',
        );
      }
    }
    if (s.stores.size > 0)
      o.log.info({ event: 'snapshots-loaded', snapshots: [...s.stores.keys()] }, 'snapshots loaded');
    return s;
  }

  get names(): string[] {
    return [...this.stores.keys()].sort();
  }

  has(name: string): boolean {
    return this.stores.has(name);
  }

  /**
   * Marks the point: from now on the old contents of every overwritten chunk are kept. The caller
   * has frozen the filesystem above; writes already inside the daemon finish first.
   */
  async create(name: string): Promise<SnapshotListing> {
    this.mustBeNew(name);
    await this.drain();
    const dir = join(this.o.dir, name);
    const ready = this.prepared.get(name);
    this.prepared.delete(name);
    const store = ready
      ? await SnapshotStore.commit(ready.tmp, dir, ready.info)
      : await SnapshotStore.create(dir, this.infoFor(name));
    this.stores.set(name, store);
    this.o.log.info({ event: 'snapshot-created', snapshot: name }, 'snapshot taken');
    return this.listing(store);
  }

  /**
   * Makes the snapshot's files ahead of its create (outside the caller's freeze): the create is
   * then a rename. A prepared snapshot never created is removed at the daemon's next start.
   */
  async prepare(name: string): Promise<void> {
    this.mustBeNew(name);
    const info = this.infoFor(name);
    this.prepared.set(name, { tmp: await SnapshotStore.prepare(join(this.o.dir, name), info), info });
  }

  private mustBeNew(name: string): void {
    const bad = checkSnapshotName(name);
    if (bad) throw new Error(bad);
    if (this.stores.has(name) || existsSync(join(this.o.dir, name)))
      throw new Error(`snapshot "${name}" already exists`);
  }

  private infoFor(name: string): SnapshotInfo {
    return {
      formatVersion: SNAPSHOT_FORMAT_VERSION,
      name,
      volumeUuid: this.o.volume.uuid,
      size: this.o.volume.size,
      chunkSize: DEFAULT_CHUNK_SIZE,
      createdAt: new Date().toISOString(),
    };
  }

  async list(exposed: (name: string) => string | undefined = () => undefined): Promise<SnapshotListing[]> {
    return Promise.all(this.names.map((n) => this.listing(this.stores.get(n)!, exposed(n))));
  }

  async get(name: string): Promise<SnapshotListing> {
    return this.listing(this.must(name));
  }

  /** Deletes a snapshot and frees its space (also one that could not be loaded). */
  async delete(name: string): Promise<void> {
    const store = this.stores.get(name);
    if (!store) {
      const dir = join(this.o.dir, name);
      if (checkSnapshotName(name) !== undefined || !existsSync(dir))
        throw new Error(`no snapshot "${name}" on this volume`);
      rmSync(dir, { recursive: true, force: true });
      return;
    }
    this.stores.delete(name);
    await store.remove();
    this.o.log.info({ event: 'snapshot-deleted', snapshot: name }, 'snapshot deleted');
  }

  /** Drops every snapshot (this replica's data changes in a way they cannot follow). */
  async dropAll(reason: string): Promise<void> {
    for (const name of this.names) await this.drop(name, reason);
  }

  /** The live volume, with copy-on-write in front of `inner` (what the primary's FUSE file serves). */
  device(inner: BlockDevice): BlockDevice {
    return {
      size: inner.size,
      read: (offset, length) => inner.read(offset, length),
      write: (offset, data) => this.write(inner, offset, data),
      flush: () => inner.flush(),
      close: () => inner.close(),
    };
  }

  /** One snapshot as a read-only block device. */
  reader(name: string): BlockDevice {
    const store = this.must(name);
    return {
      size: this.o.volume.size,
      read: (offset, length) => this.readSnapshot(store, offset, length),
      write: async () => {
        throw new DeviceError('EROFS', `snapshot ${name} is read-only`);
      },
      flush: async () => {},
      close: async () => {},
    };
  }

  /**
   * Writes the snapshot's chunks back through `target` (the copy-on-write device over the
   * replicated one: every replica gets them, and other snapshots keep what they overwrite). The
   * caller has released the block device above.
   */
  async rollback(name: string, target: BlockDevice): Promise<{ bytes: number; ranges: number }> {
    const store = this.must(name);
    const reader = this.reader(name);
    const ranges = planRollback(store.map.slots, store.info.chunkSize, store.info.size);
    let bytes = 0;
    for (const r of ranges) {
      await target.write(r.offset, await reader.read(r.offset, r.length));
      bytes += r.length;
    }
    await target.flush();
    this.o.log.info({ event: 'snapshot-rollback', snapshot: name, bytes }, 'rolled back to snapshot');
    return { bytes, ranges: ranges.length };
  }

  async close(): Promise<void> {
    for (const s of this.stores.values()) await s.close();
    this.stores.clear();
  }

  private must(name: string): SnapshotStore {
    const s = this.stores.get(name);
    if (!s) throw new Error(`no snapshot "${name}" on this volume`);
    return s;
  }

  private async listing(store: SnapshotStore, deviceFile?: string): Promise<SnapshotListing> {
    return {
      name: store.name,
      createdAt: store.info.createdAt,
      chunkSize: store.info.chunkSize,
      ...(await store.space()),
      ...(deviceFile ? { deviceFile } : {}),
    };
  }

  private async drain(): Promise<void> {
    if (this.writesInFlight === 0) return;
    await new Promise<void>((r) => (this.drained = r));
  }

  private async write(inner: BlockDevice, offset: number, data: Buffer): Promise<void> {
    if (this.stores.size === 0) return inner.write(offset, data);
    this.writesInFlight++;
    try {
      return await this.writeWithCopies(inner, offset, data);
    } finally {
      if (--this.writesInFlight === 0) this.drained?.();
    }
  }

  private async writeWithCopies(inner: BlockDevice, offset: number, data: Buffer): Promise<void> {
    const { first, last } = chunkRange(offset, data.length, DEFAULT_CHUNK_SIZE);
    // Wait for copies of these chunks already under way, until none is (checked without yielding).
    for (;;) {
      let pending: Promise<void> | undefined;
      for (let c = first; c <= last && !pending; c++) pending = this.copying.get(c);
      if (!pending) break;
      await pending;
    }
    const stores = [...this.stores.values()];
    const copies = planCopies(
      first,
      last,
      stores.map((s) => ({ name: s.name, slots: s.map.slots })),
    );
    if (copies.length === 0) return inner.write(offset, data);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    for (const c of copies) this.copying.set(c.chunk, gate);
    let written: Promise<void>;
    try {
      await this.copyChunks(copies);
    } finally {
      // The write is issued before waiters go on, so the device below sees them in order.
      written = inner.write(offset, data);
      for (const c of copies) this.copying.delete(c.chunk);
      release();
    }
    return written;
  }

  /**
   * Reads the old contents of every chunk first, then hands them to the snapshots at once: a
   * snapshot makes the copies it is given together durable with one fdatasync (store.ts).
   */
  private async copyChunks(copies: readonly ChunkCopy[]): Promise<void> {
    // Every snapshot copies chunks of this one size (load sets aside any other).
    const chunkSize = DEFAULT_CHUNK_SIZE;
    const olds = await Promise.all(
      copies.map(async (c) => {
        const offset = c.chunk * chunkSize;
        try {
          return await this.o.base.read(offset, Math.min(chunkSize, this.o.volume.size - offset));
        } catch (err) {
          for (const name of c.into) await this.drop(name, `reading chunk ${c.chunk}: ${errorMessage(err)}`);
          return undefined;
        }
      }),
    );
    const appends: Array<Promise<void>> = [];
    copies.forEach((c, i) => {
      const old = olds[i];
      if (!old) return;
      for (const name of c.into) {
        const store = this.stores.get(name);
        if (!store || store.map.slots[c.chunk] !== -1) continue;
        appends.push(
          store
            .append(c.chunk, old)
            .catch((err: unknown) =>
              this.drop(name, `copy-on-write of chunk ${c.chunk} failed: ${errorMessage(err)}`),
            ),
        );
      }
    });
    await Promise.all(appends);
  }

  /** A snapshot that cannot keep up is dropped (never the volume's write). */
  private async drop(name: string, reason: string): Promise<void> {
    const store = this.stores.get(name);
    if (!store) return;
    this.stores.delete(name);
    this.o.log.error({ event: 'snapshot-dropped', snapshot: name, reason }, 'snapshot dropped');
    try {
      await store.remove();
    } catch (err) {
      this.o.log.error(
        { event: 'snapshot-remove-failed', snapshot: name, reason: errorMessage(err) },
        'cannot remove',
      );
    }
  }

  private async readSnapshot(store: SnapshotStore, offset: number, length: number): Promise<Buffer> {
    if (store.isClosed) throw new DeviceError('EIO', `snapshot ${store.name} was dropped or deleted`);
    const out = Buffer.alloc(length);
    const { chunkSize } = store.info;
    const fill = async (from: number, len: number, at: number): Promise<void> => {
      for (const seg of planRead(from, len, chunkSize, store.map.slots)) {
        if (seg.from === 'cow') {
          await store.readSlot(seg.slot, seg.within, seg.length, out, seg.at + at);
          continue;
        }
        await this.waitCopies(seg.firstChunk, seg.lastChunk);
        const live = await this.o.base.read(seg.offset, seg.length);
        // A chunk copied while we read it may have been overwritten since: read it again, from its slot.
        if (this.touched(store, seg.firstChunk, seg.lastChunk)) {
          await this.waitCopies(seg.firstChunk, seg.lastChunk);
          await fill(seg.offset, seg.length, seg.at + at);
        } else live.copy(out, seg.at + at);
      }
    };
    try {
      await fill(offset, length, 0);
    } catch (err) {
      if (store.isClosed) throw new DeviceError('EIO', `snapshot ${store.name} was dropped or deleted`);
      throw err;
    }
    return out;
  }

  private touched(store: SnapshotStore, first: number, last: number): boolean {
    for (let c = first; c <= last; c++) if (store.map.slots[c] !== -1 || this.copying.has(c)) return true;
    return false;
  }

  private async waitCopies(first: number, last: number): Promise<void> {
    for (let c = first; c <= last; c++) {
      const p = this.copying.get(c);
      if (p) await p;
    }
  }
}
