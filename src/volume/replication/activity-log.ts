/**
 * Activity log: the set of "hot" extents the primary may be writing into. An extent is recorded
 * durably in the log *before* the first write into it; after a crash of the primary every logged
 * extent counts as dirty towards every peer (it may hold writes a peer never got). Consecutive writes
 * into hot extents need no metadata write at all.
 *
 * `ActivityLogState` is the pure part (which extents are hot, LRU eviction, in-flight counts);
 * `ActivityLogFile` persists it in two alternating CRC-protected slots, so a torn write of one slot
 * leaves the other readable.
 */
import { basename, dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { DirStateFiles, type SlotFile } from './state-files.ts';

export const DEFAULT_AL_EXTENT_SIZE = 4 * 1024 * 1024;
export const DEFAULT_AL_SLOTS = 127;

export interface AdmitResult {
  /** The hot set changed: persist `hot` (durably) before the write may start. */
  mustCommit: boolean;
  /** Extents that left the log: their peer bitmap bits must be persisted before or with the commit. */
  evicted: number[];
}

export class ActivityLogState {
  readonly extentSize: number;
  readonly slots: number;
  /** Hot extents in LRU order (least recently used first). */
  #hot = new Map<number, number>(); // extent -> writes in flight
  /**
   * Hot extents that a finished commit recorded. A write into an extent admitted but not yet
   * durable waits for the commit too: else it could reach a disk while a crash would still lose
   * the extent from the log (found by the simulation, seed 29 of the ci profile with crashes
   * during writes: a second write into a just-admitted extent went out before the commit).
   */
  #durable = new Set<number>();

  constructor(extentSize = DEFAULT_AL_EXTENT_SIZE, slots = DEFAULT_AL_SLOTS, initial: number[] = []) {
    this.extentSize = extentSize;
    this.slots = slots;
    for (const e of initial) {
      this.#hot.set(e, 0);
      this.#durable.add(e);
    }
  }

  get hot(): number[] {
    return [...this.#hot.keys()];
  }

  extentsOf(offset: number, length: number): number[] {
    const first = Math.floor(offset / this.extentSize);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / this.extentSize);
    const out: number[] = [];
    for (let e = first; e <= last; e++) out.push(e);
    return out;
  }

  /**
   * A write into [offset, offset+length) wants to start. Returns undefined when the log is full of
   * extents with writes in flight (the caller waits for a `complete` and retries).
   */
  admit(offset: number, length: number): AdmitResult | undefined {
    const wanted = this.extentsOf(offset, length);
    const missing = wanted.filter((e) => !this.#hot.has(e));
    const evictable = [...this.#hot.entries()]
      .filter(([e, n]) => n === 0 && !wanted.includes(e))
      .map(([e]) => e);
    const overflow = this.#hot.size + missing.length - this.slots;
    if (overflow > evictable.length) {
      return undefined;
    }
    const evicted = overflow > 0 ? evictable.slice(0, overflow) : [];
    for (const e of evicted) {
      this.#hot.delete(e);
      this.#durable.delete(e);
    }
    for (const e of wanted) {
      const n = this.#hot.get(e) ?? 0;
      this.#hot.delete(e); // re-insert: most recently used
      this.#hot.set(e, n + 1);
    }
    return { mustCommit: wanted.some((e) => !this.#durable.has(e)), evicted };
  }

  /** A commit of this hot set (a snapshot taken when it started) is on stable storage. */
  committed(hot: number[]): void {
    for (const e of hot) if (this.#hot.has(e)) this.#durable.add(e);
  }

  /** The write admitted for this range finished (successfully or not). */
  complete(offset: number, length: number): void {
    for (const e of this.extentsOf(offset, length)) {
      const n = this.#hot.get(e);
      if (n !== undefined && n > 0) this.#hot.set(e, n - 1);
    }
  }

  inFlight(extent: number): number {
    return this.#hot.get(extent) ?? 0;
  }

  /** Byte ranges to treat as dirty towards every peer after a crash. */
  static crashRanges(
    hot: number[],
    extentSize: number,
    volumeSize: number,
  ): Array<{ offset: number; length: number }> {
    return [...hot]
      .sort((a, b) => a - b)
      .map((e) => ({ offset: e * extentSize, length: Math.min(extentSize, volumeSize - e * extentSize) }))
      .filter((r) => r.length > 0);
  }
}

const AL_MAGIC = 0x4356414c; // "CVAL"

/** Slot image: magic, seq (u64), extent size, count, extents (u32 each), CRC-32. */
export function encodeAlSlot(seq: number, extentSize: number, hot: number[], slots: number): Buffer {
  const buf = Buffer.alloc(slotBytes(slots));
  buf.writeUInt32BE(AL_MAGIC, 0);
  buf.writeBigUInt64BE(BigInt(seq), 4);
  buf.writeUInt32BE(extentSize, 12);
  buf.writeUInt32BE(hot.length, 16);
  hot.forEach((e, i) => {
    buf.writeUInt32BE(e, 20 + 4 * i);
  });
  buf.writeUInt32BE(crc32(buf.subarray(0, buf.length - 4)), buf.length - 4);
  return buf;
}

export function decodeAlSlot(
  buf: Buffer,
  slots: number,
): { seq: number; extentSize: number; hot: number[] } | undefined {
  if (buf.length !== slotBytes(slots)) return undefined;
  if (buf.readUInt32BE(0) !== AL_MAGIC) return undefined;
  if (crc32(buf.subarray(0, buf.length - 4)) !== buf.readUInt32BE(buf.length - 4)) return undefined;
  const count = buf.readUInt32BE(16);
  if (count > slots) return undefined;
  const hot: number[] = [];
  for (let i = 0; i < count; i++) hot.push(buf.readUInt32BE(20 + 4 * i));
  return { seq: Number(buf.readBigUInt64BE(4)), extentSize: buf.readUInt32BE(12), hot };
}

function slotBytes(slots: number): number {
  return 24 + 4 * slots;
}

/** The on-disk activity log: two slots written alternately with fdatasync. */
export class ActivityLogFile {
  readonly slots: number;
  #file: SlotFile;
  #seq: number;

  private constructor(file: SlotFile, slots: number, seq: number) {
    this.#file = file;
    this.slots = slots;
    this.#seq = seq;
  }

  /**
   * Opens (creating if needed) a path or a slot file (state-files.ts) and returns the newest valid
   * content: the hot set at the last commit.
   */
  static open(
    where: string | SlotFile,
    slots = DEFAULT_AL_SLOTS,
  ): { log: ActivityLogFile; hot: number[]; extentSize?: number } {
    const file =
      typeof where === 'string' ? new DirStateFiles(dirname(where)).openSlots(basename(where)) : where;
    const size = slotBytes(slots);
    let best: { seq: number; extentSize: number; hot: number[] } | undefined;
    for (let i = 0; i < 2; i++) {
      const buf = file.initial.subarray(i * size, (i + 1) * size);
      const slot = buf.length === size ? decodeAlSlot(buf, slots) : undefined;
      if (slot && (!best || slot.seq > best.seq)) best = slot;
    }
    const log = new ActivityLogFile(file, slots, best?.seq ?? 0);
    return best ? { log, hot: best.hot, extentSize: best.extentSize } : { log, hot: [] };
  }

  /** Durably records the hot set, synchronously (tests and tools; the device uses `commitGrouped`). */
  commit(extentSize: number, hot: number[]): void {
    this.#seq++;
    const buf = encodeAlSlot(this.#seq, extentSize, hot, this.slots);
    this.#file.writeAtSync((this.#seq % 2) * buf.length, buf);
  }

  #running: Promise<void> | undefined;
  #next: Promise<void> | undefined;

  /**
   * Durably records the hot set without blocking the event loop. Resolves once a commit that
   * *started after* this call is on disk: `snapshot` is read when that commit starts, so it holds
   * every extent admitted before the call. Callers that arrive while a commit runs share the next
   * one (group commit). `before` runs first in each commit (persisting the bitmaps of extents that
   * leave the log); `durable` gets the snapshot once it is on disk.
   */
  commitGrouped(
    snapshot: () => { extentSize: number; hot: number[] },
    before?: () => Promise<void>,
    durable?: (hot: number[]) => void,
  ): Promise<void> {
    if (this.#next) return this.#next;
    const next = (async () => {
      await this.#running?.catch(() => undefined);
      this.#next = undefined; // from here on, a new admission needs another commit
      const { extentSize, hot } = snapshot();
      const run = (async () => {
        await before?.();
        this.#seq++;
        const buf = encodeAlSlot(this.#seq, extentSize, hot, this.slots);
        await this.#file.writeAt((this.#seq % 2) * buf.length, buf);
        durable?.(hot);
      })();
      this.#running = run;
      try {
        await run;
      } finally {
        if (this.#running === run) this.#running = undefined;
      }
    })();
    this.#next = next;
    return next;
  }

  /** Resolves when no commit is running or waiting. */
  async settled(): Promise<void> {
    while (this.#next || this.#running) await (this.#next ?? this.#running)?.catch(() => undefined);
  }

  close(): void {
    this.#file.close();
  }
}
