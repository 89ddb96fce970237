/**
 * Per-peer dirty bitmap: one bit per extent (64 KiB by default) that the peer is missing.
 * Pure in-memory logic plus a small file format (header + bits + CRC) for clean shutdown and for
 * activity-log evictions.
 */
import { basename, dirname } from 'node:path';
import { crc32 } from 'node:zlib';
import { DirStateFiles, type StateFiles } from './state-files.ts';

export const DEFAULT_EXTENT_SIZE = 64 * 1024;
const BITMAP_MAGIC = 0x43564246; // "CVBF"

export interface ByteRange {
  offset: number;
  length: number;
}

export class DirtyBitmap {
  readonly size: number;
  readonly extentSize: number;
  readonly extents: number;
  #bits: Uint8Array;
  #count = 0;
  /** Set when bits changed since the last persist (lets the activity log skip needless writes). */
  changedSincePersist = false;

  constructor(size: number, extentSize = DEFAULT_EXTENT_SIZE, bits?: Uint8Array) {
    if (extentSize <= 0 || extentSize % 4096 !== 0)
      throw new RangeError('extent size must be a multiple of 4096');
    this.size = size;
    this.extentSize = extentSize;
    this.extents = Math.ceil(size / extentSize);
    this.#bits = new Uint8Array(Math.ceil(this.extents / 8));
    if (bits) {
      if (bits.length !== this.#bits.length) throw new RangeError('bitmap length does not match the volume');
      this.#bits.set(bits);
      for (let e = 0; e < this.extents; e++) if (this.isDirty(e)) this.#count++;
    }
  }

  /** Extents touched by a byte range. */
  extentRange(offset: number, length: number): [first: number, last: number] | undefined {
    if (length <= 0) return undefined;
    const first = Math.floor(offset / this.extentSize);
    const last = Math.min(this.extents - 1, Math.floor((offset + length - 1) / this.extentSize));
    return first > last ? undefined : [first, last];
  }

  isDirty(extent: number): boolean {
    return ((this.#bits[extent >> 3] ?? 0) & (1 << (extent & 7))) !== 0;
  }

  setExtent(extent: number): void {
    if (extent < 0 || extent >= this.extents || this.isDirty(extent)) return;
    this.#bits[extent >> 3] = (this.#bits[extent >> 3] ?? 0) | (1 << (extent & 7));
    this.#count++;
    this.changedSincePersist = true;
  }

  clearExtent(extent: number): void {
    if (extent < 0 || extent >= this.extents || !this.isDirty(extent)) return;
    this.#bits[extent >> 3] = (this.#bits[extent >> 3] ?? 0) & ~(1 << (extent & 7));
    this.#count--;
    this.changedSincePersist = true;
  }

  markRange(offset: number, length: number): void {
    const r = this.extentRange(offset, length);
    if (r) for (let e = r[0]; e <= r[1]; e++) this.setExtent(e);
  }

  setAll(): void {
    for (let e = 0; e < this.extents; e++) this.setExtent(e);
  }

  clearAll(): void {
    for (let e = 0; e < this.extents; e++) this.clearExtent(e);
  }

  /** Marks every extent of a sparse set (the unflushed extents of a peer that went away). */
  markExtents(extents: Iterable<number>): void {
    for (const e of extents) this.setExtent(e);
  }

  /** OR another bitmap in (split-brain resolution: the union of both sides' changes must travel). */
  merge(other: DirtyBitmap): void {
    if (other.extents !== this.extents) throw new RangeError('bitmaps of different volumes');
    for (let e = 0; e < this.extents; e++) if (other.isDirty(e)) this.setExtent(e);
  }

  get dirtyExtents(): number {
    return this.#count;
  }

  /** Bytes a resync must send (the last extent may be short). */
  get dirtyBytes(): number {
    let bytes = 0;
    for (const r of this.dirtyRanges()) bytes += r.length;
    return bytes;
  }

  /** Dirty extents as coalesced byte ranges, in order, clipped to the volume size. */
  *dirtyRanges(maxLength = Number.POSITIVE_INFINITY): Generator<ByteRange> {
    let e = 0;
    while (e < this.extents) {
      if (!this.isDirty(e)) {
        e++;
        continue;
      }
      const start = e * this.extentSize;
      let end = start;
      while (e < this.extents && this.isDirty(e) && end - start < maxLength) {
        end = Math.min(this.size, (e + 1) * this.extentSize);
        e++;
      }
      yield { offset: start, length: end - start };
    }
  }

  toBytes(): Uint8Array {
    return this.#bits.slice();
  }

  /** File image: magic, size, extent size, bits, CRC-32 of everything before it. */
  serialize(): Buffer {
    const head = Buffer.alloc(16);
    head.writeUInt32BE(BITMAP_MAGIC, 0);
    head.writeUIntBE(this.size, 4, 6);
    head.writeUInt32BE(this.extentSize, 10);
    const body = Buffer.concat([head, Buffer.from(this.#bits)]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([body, crc]);
  }

  /** Parses a file image; undefined when it is damaged or belongs to another geometry. */
  static deserialize(buf: Buffer, size: number, extentSize = DEFAULT_EXTENT_SIZE): DirtyBitmap | undefined {
    if (buf.length < 20) return undefined;
    const body = buf.subarray(0, buf.length - 4);
    if (crc32(body) !== buf.readUInt32BE(buf.length - 4)) return undefined;
    if (body.readUInt32BE(0) !== BITMAP_MAGIC) return undefined;
    if (body.readUIntBE(4, 6) !== size || body.readUInt32BE(10) !== extentSize) return undefined;
    try {
      return new DirtyBitmap(size, extentSize, body.subarray(16));
    } catch {
      return undefined;
    }
  }
}

/**
 * Durable save (temp file, fsync, rename) without blocking the event loop. The content is taken when
 * the call starts; callers must not run two saves of one file at once (the device chains them per peer).
 * `alsoDirty`: extents saved as dirty without being marked in memory (see ReplicatedDevice's eviction).
 */
export async function saveBitmapTo(
  files: StateFiles,
  name: string,
  bitmap: DirtyBitmap,
  alsoDirty?: Iterable<number>,
): Promise<void> {
  let image = bitmap;
  if (alsoDirty) {
    image = new DirtyBitmap(bitmap.size, bitmap.extentSize, bitmap.toBytes().slice());
    image.markExtents(alsoDirty);
  }
  const content = image.serialize();
  bitmap.changedSincePersist = false;
  try {
    await files.replace(name, content);
  } catch (err) {
    bitmap.changedSincePersist = true;
    throw err;
  }
}

/**
 * Loads a persisted bitmap. A missing or damaged file means we do not know what the peer misses:
 * the caller gets a bitmap with every extent dirty (safe: a full resync), and `trusted: false`.
 */
export function loadBitmapFrom(
  files: StateFiles,
  name: string,
  size: number,
  extentSize = DEFAULT_EXTENT_SIZE,
): { bitmap: DirtyBitmap; trusted: boolean } {
  const buf = files.read(name);
  const parsed = buf ? DirtyBitmap.deserialize(buf, size, extentSize) : undefined;
  if (parsed) return { bitmap: parsed, trusted: true };
  const all = new DirtyBitmap(size, extentSize);
  all.setAll();
  return { bitmap: all, trusted: false };
}

/** saveBitmapTo for a path. */
export function saveBitmapAsync(file: string, bitmap: DirtyBitmap): Promise<void> {
  return saveBitmapTo(new DirStateFiles(dirname(file)), basename(file), bitmap);
}

/** The same, synchronously (tests and tools). */
export function saveBitmap(file: string, bitmap: DirtyBitmap): void {
  new DirStateFiles(dirname(file)).replaceSync(basename(file), bitmap.serialize());
  bitmap.changedSincePersist = false;
}

/** loadBitmapFrom for a path. */
export function loadBitmap(
  file: string,
  size: number,
  extentSize = DEFAULT_EXTENT_SIZE,
): { bitmap: DirtyBitmap; trusted: boolean } {
  return loadBitmapFrom(new DirStateFiles(dirname(file)), basename(file), size, extentSize);
}

/**
 * A sparse set of extents: what was written to a peer since its last FLUSH. A new one per flush
 * costs nothing, where a whole bitmap would cost (volume size / 512 KiB) bytes per FSYNC.
 */
export class ExtentSet {
  readonly extentSize: number;
  #extents = new Set<number>();

  constructor(extentSize = DEFAULT_EXTENT_SIZE) {
    this.extentSize = extentSize;
  }

  markRange(offset: number, length: number): void {
    if (length <= 0) return;
    const last = Math.floor((offset + length - 1) / this.extentSize);
    for (let e = Math.floor(offset / this.extentSize); e <= last; e++) this.#extents.add(e);
  }

  get size(): number {
    return this.#extents.size;
  }

  clearAll(): void {
    this.#extents.clear();
  }

  [Symbol.iterator](): Iterator<number> {
    return this.#extents.values();
  }
}
