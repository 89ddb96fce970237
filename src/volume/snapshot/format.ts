/**
 * The on-disk format of a volume snapshot, the one module that reads and writes it (the daemon and
 * the tests both use it). A snapshot is a directory `VOLUME/snapshots/NAME/`:
 *
 * - `snapshot.json`: what it is (format version, name, the volume's UUID and size, chunk size,
 *   creation time), written once, atomically, at creation;
 * - `copies` (format 2): the old contents of the chunks the primary overwrote since, with their
 *   records, in segments of one 4 KiB record block then 256 slots of one chunk each. Record `i` of
 *   segment `k` (16 bytes: chunk + 1, slot, CRC-32 of the slot's data, CRC-32 of those 12 bytes)
 *   says what slot `256k + i` holds. A slot's data and its record are written together, in batches
 *   of consecutive slots, and made durable by ONE fdatasync per batch; the volume's writes they
 *   guard wait for it. A batch starts only when the one before is durable, so after a crash only
 *   the last MAX_BATCH slots can hold a record whose data did not reach the disk: the load checks
 *   those slots' data against the CRC in their record (recoverBlockMap), and a record that is
 *   torn, zero, or fails either CRC means the write it guarded never happened (the slot is unused).
 *
 * Format 1 kept the slots in `cow` and their records in `map` (each written O_DSYNC, one after
 * the other: two durable writes per copy); such a snapshot is converted to format 2 when loaded.
 */
import { crc32 } from 'node:zlib';
import { z } from 'zod';

export const SNAPSHOT_FORMAT_VERSION = 2;
/** Copy-on-write granularity: the volume's 64 KiB extents (as the dirty bitmap's). */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
export const SNAPSHOT_INFO_FILE = 'snapshot.json';
export const COPIES_FILE = 'copies';
export const RECORD_SIZE = 16;
export const RECORD_BLOCK_SIZE = 4096;
export const SLOTS_PER_SEGMENT = RECORD_BLOCK_SIZE / RECORD_SIZE;
/** Slots one batch holds at most: the slots whose data the load checks after a crash. */
export const MAX_BATCH = 64;
/** Snapshot names: like volume names. */
export const SNAPSHOT_NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export const snapshotInfoSchema = z.strictObject({
  formatVersion: z.union([z.literal(1), z.literal(SNAPSHOT_FORMAT_VERSION)]),
  name: z.string().regex(SNAPSHOT_NAME_RE),
  volumeUuid: z.uuid(),
  /** The volume's size when the snapshot was taken (a resized volume invalidates it). */
  size: z.number().int().positive(),
  chunkSize: z
    .number()
    .int()
    .positive()
    .refine((n) => n % 4096 === 0, 'expected a multiple of 4096'),
  createdAt: z.string(),
});
export type SnapshotInfo = z.infer<typeof snapshotInfoSchema>;

export function checkSnapshotName(name: string): string | undefined {
  return SNAPSHOT_NAME_RE.test(name)
    ? undefined
    : `snapshot name "${name}" is invalid (expected lowercase letters, digits, ., - or _, at most 63, starting with a letter or digit)`;
}

export function segmentSize(chunkSize: number): number {
  return RECORD_BLOCK_SIZE + SLOTS_PER_SEGMENT * chunkSize;
}

/** Where slot `slot`'s record lives in the copies file. */
export function recordOffset(slot: number, chunkSize: number): number {
  return (
    Math.floor(slot / SLOTS_PER_SEGMENT) * segmentSize(chunkSize) + (slot % SLOTS_PER_SEGMENT) * RECORD_SIZE
  );
}

/** Where slot `slot`'s data starts in the copies file. */
export function slotOffset(slot: number, chunkSize: number): number {
  return (
    Math.floor(slot / SLOTS_PER_SEGMENT) * segmentSize(chunkSize) +
    RECORD_BLOCK_SIZE +
    (slot % SLOTS_PER_SEGMENT) * chunkSize
  );
}

/** Bytes of chunk `chunk` of a volume of `size` bytes (the last one may be short). */
export function chunkLength(chunk: number, chunkSize: number, size: number): number {
  return Math.min(chunkSize, size - chunk * chunkSize);
}

export function encodeRecord(slot: number, chunk: number, dataCrc: number): Buffer {
  const b = Buffer.alloc(RECORD_SIZE);
  b.writeUInt32LE(chunk + 1, 0);
  b.writeUInt32LE(slot, 4);
  b.writeUInt32LE(dataCrc, 8);
  b.writeUInt32LE(crc32(b.subarray(0, 12)), 12);
  return b;
}

/** What a slot holds according to its record. */
export interface SlotRecord {
  slot: number;
  chunk: number;
  dataCrc: number;
}

/**
 * The good records among `blocks` (the record blocks of segments 0, 1, ... concatenated; a short
 * or missing one reads as zeros): zero, torn or corrupt records, records naming another slot (a
 * block written in the wrong place) or a chunk past the volume's end are left out. Pure.
 */
export function decodeRecords(blocks: Buffer, chunks: number): SlotRecord[] {
  const out: SlotRecord[] = [];
  const n = Math.floor(blocks.length / RECORD_SIZE);
  for (let i = 0; i < n; i++) {
    const at = i * RECORD_SIZE;
    const stored = blocks.readUInt32LE(at);
    if (stored === 0) continue;
    // Segment k's block holds slots 256k.., so the i-th record of the concatenation is slot i.
    const slot = i;
    if (blocks.readUInt32LE(at + 12) !== crc32(blocks.subarray(at, at + 12))) continue;
    if (blocks.readUInt32LE(at + 4) !== slot || stored - 1 >= chunks) continue;
    out.push({ slot, chunk: stored - 1, dataCrc: blocks.readUInt32LE(at + 8) });
  }
  return out;
}

/**
 * The records whose slot's data the load must check against its CRC: those of the last batch
 * that may have been in flight (every slot within MAX_BATCH of the highest recorded one).
 */
export function recordsToCheck(records: readonly SlotRecord[]): SlotRecord[] {
  const top = records.reduce((m, r) => Math.max(m, r.slot), -1);
  return records.filter((r) => r.slot > top - MAX_BATCH);
}

/** The block map as loaded: chunk -> slot (-1 = not copied: read the live volume), and the next free slot. */
export interface BlockMap {
  slots: Int32Array;
  nextSlot: number;
  copied: number;
}

export function emptyBlockMap(size: number, chunkSize: number): BlockMap {
  return { slots: new Int32Array(Math.ceil(size / chunkSize)).fill(-1), nextSlot: 0, copied: 0 };
}

/**
 * The block map from the good records, less the slots whose data failed its check (`bad`). New
 * copies go after every slot that has a record (also a bad one: its slot is not reused). A chunk
 * recorded twice keeps its first slot (the first copy is the old contents). Pure.
 */
export function recoverBlockMap(
  records: readonly SlotRecord[],
  bad: ReadonlySet<number>,
  size: number,
  chunkSize: number,
): BlockMap {
  const map = emptyBlockMap(size, chunkSize);
  for (const r of [...records].sort((a, b) => a.slot - b.slot)) {
    map.nextSlot = Math.max(map.nextSlot, r.slot + 1);
    if (bad.has(r.slot) || map.slots[r.chunk] !== -1) continue;
    map.slots[r.chunk] = r.slot;
    map.copied++;
  }
  return map;
}

/**
 * The block map of a copies file from its record blocks (`blocks`, concatenated), checking the
 * data of the records of a batch a crash may have cut (`dataOf` reads a slot's data): what the
 * daemon's load and the tests both use. `bad`: records to erase before any new copy. Pure but for
 * `dataOf`.
 */
export function loadBlockMap(
  blocks: Buffer,
  size: number,
  chunkSize: number,
  dataOf: (slot: number, length: number) => Buffer,
): { map: BlockMap; bad: number[] } {
  const records = decodeRecords(blocks, Math.ceil(size / chunkSize));
  const bad = recordsToCheck(records)
    .filter((r) => crc32(dataOf(r.slot, chunkLength(r.chunk, chunkSize, size))) !== r.dataCrc)
    .map((r) => r.slot);
  return { map: recoverBlockMap(records, new Set(bad), size, chunkSize), bad };
}

/** The record blocks of a whole copies file held in memory (tests, tools). */
export function recordBlocksOf(file: Buffer, chunkSize: number): Buffer {
  const seg = segmentSize(chunkSize);
  const out = Buffer.alloc(Math.ceil(file.length / seg) * RECORD_BLOCK_SIZE);
  for (let s = 0; s * seg < file.length; s++)
    file.copy(out, s * RECORD_BLOCK_SIZE, s * seg, Math.min(file.length, s * seg + RECORD_BLOCK_SIZE));
  return out;
}

/** A whole copies file held in memory, decoded as the daemon loads it (tests, tools). */
export function blockMapOfFile(
  file: Buffer,
  size: number,
  chunkSize: number,
): { map: BlockMap; bad: number[] } {
  return loadBlockMap(recordBlocksOf(file, chunkSize), size, chunkSize, (slot, length) => {
    const at = slotOffset(slot, chunkSize);
    if (at + length <= file.length) return file.subarray(at, at + length);
    const out = Buffer.alloc(length);
    if (at < file.length) file.copy(out, 0, at);
    return out;
  });
}

// Format 1, read only to convert it: `map` = a 16-byte header (magic, chunk size), then one 8-byte
// record per slot (chunk + 1, CRC-32 of slot and chunk); `cow` = slot s at s * chunkSize.
export const V1_COW_FILE = 'cow';
export const V1_MAP_FILE = 'map';
const V1_MAGIC = 'CVSNAPM1';
const V1_HEADER_SIZE = 16;
const V1_RECORD_SIZE = 8;

function v1RecordCrc(slot: number, chunk: number): number {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(slot, 0);
  b.writeUInt32LE(chunk, 4);
  return crc32(b);
}

/** A format-1 map file's good records (each was durable before its write: no data check). */
export function decodeV1Map(
  bytes: Buffer,
  chunks: number,
  file: string,
): Array<{ slot: number; chunk: number }> {
  if (bytes.length < V1_HEADER_SIZE || bytes.toString('latin1', 0, 8) !== V1_MAGIC)
    throw new Error(`${file}: not a snapshot block map (expected the header ${V1_MAGIC})`);
  const out: Array<{ slot: number; chunk: number }> = [];
  const n = Math.floor((bytes.length - V1_HEADER_SIZE) / V1_RECORD_SIZE);
  for (let slot = 0; slot < n; slot++) {
    const at = V1_HEADER_SIZE + slot * V1_RECORD_SIZE;
    const stored = bytes.readUInt32LE(at);
    if (stored === 0 || stored - 1 >= chunks) continue;
    if (bytes.readUInt32LE(at + 4) === v1RecordCrc(slot, stored - 1)) out.push({ slot, chunk: stored - 1 });
  }
  return out;
}

/** A format-1 map file (for the conversion's tests). */
export function encodeV1Map(
  chunkSize: number,
  records: ReadonlyArray<{ slot: number; chunk: number }>,
): Buffer {
  const top = records.reduce((m, r) => Math.max(m, r.slot + 1), 0);
  const b = Buffer.alloc(V1_HEADER_SIZE + top * V1_RECORD_SIZE);
  b.write(V1_MAGIC, 0, 'latin1');
  b.writeUInt32LE(chunkSize, 8);
  for (const r of records) {
    const at = V1_HEADER_SIZE + r.slot * V1_RECORD_SIZE;
    b.writeUInt32LE(r.chunk + 1, at);
    b.writeUInt32LE(v1RecordCrc(r.slot, r.chunk), at + 4);
  }
  return b;
}
