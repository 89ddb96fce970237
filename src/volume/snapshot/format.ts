/**
 * The on-disk format of a volume snapshot, the one module that reads and writes it (the daemon and
 * the tests both use it). A snapshot is a directory `VOLUME/snapshots/NAME/`:
 *
 * - `snapshot.json`: what it is (format version, name, the volume's UUID and size, chunk size,
 *   creation time), written once, atomically, at creation;
 * - `cow`: a sparse file of slots, one chunk each: slot `s` lives at `s * chunkSize` and holds the
 *   old contents of one chunk of the volume, copied before the primary first overwrote it;
 * - `map`: the block map, a 16-byte header then one 8-byte record per slot at `16 + s * 8`:
 *   chunk index + 1 (u32 LE; 0 = slot unused) and a CRC-32 of (slot, chunk) (u32 LE). A record is
 *   written (O_DSYNC) only after its slot's data is durable, and the volume's write waits for the
 *   record: a record that is torn, zero or fails its CRC means the write it guarded never
 *   happened, so the slot is simply unused.
 */
import { crc32 } from 'node:zlib';
import { z } from 'zod';

export const SNAPSHOT_FORMAT_VERSION = 1;
/** Copy-on-write granularity: the volume's 64 KiB extents (as the dirty bitmap's). */
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
export const SNAPSHOT_INFO_FILE = 'snapshot.json';
export const COW_FILE = 'cow';
export const MAP_FILE = 'map';
export const MAP_MAGIC = 'CVSNAPM1';
export const MAP_HEADER_SIZE = 16;
export const MAP_RECORD_SIZE = 8;
/** Snapshot names: like volume names. */
export const SNAPSHOT_NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export const snapshotInfoSchema = z.strictObject({
  formatVersion: z.literal(SNAPSHOT_FORMAT_VERSION),
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

export function encodeMapHeader(chunkSize: number): Buffer {
  const b = Buffer.alloc(MAP_HEADER_SIZE);
  b.write(MAP_MAGIC, 0, 'latin1');
  b.writeUInt32LE(chunkSize, 8);
  return b;
}

export function mapRecordOffset(slot: number): number {
  return MAP_HEADER_SIZE + slot * MAP_RECORD_SIZE;
}

function recordCrc(slot: number, chunk: number): number {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(slot, 0);
  b.writeUInt32LE(chunk, 4);
  return crc32(b);
}

export function encodeMapRecord(slot: number, chunk: number): Buffer {
  const b = Buffer.alloc(MAP_RECORD_SIZE);
  b.writeUInt32LE(chunk + 1, 0);
  b.writeUInt32LE(recordCrc(slot, chunk), 4);
  return b;
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
 * Decodes a map file (pure). Throws with `file` named when the header is wrong. Records that are
 * unused, torn or fail their CRC are skipped; a chunk recorded twice keeps its first slot (the
 * first copy is the old contents; a later one cannot exist unless a record was lost, and then the
 * first is still the right one).
 */
export function decodeBlockMap(bytes: Buffer, size: number, file: string): BlockMap {
  if (bytes.length < MAP_HEADER_SIZE || bytes.toString('latin1', 0, 8) !== MAP_MAGIC)
    throw new Error(`${file}: not a snapshot block map (expected the header ${MAP_MAGIC})`);
  const chunkSize = bytes.readUInt32LE(8);
  const map = emptyBlockMap(size, chunkSize);
  const records = Math.floor((bytes.length - MAP_HEADER_SIZE) / MAP_RECORD_SIZE);
  for (let slot = 0; slot < records; slot++) {
    const at = mapRecordOffset(slot);
    const stored = bytes.readUInt32LE(at);
    if (stored === 0) continue;
    const chunk = stored - 1;
    if (bytes.readUInt32LE(at + 4) !== recordCrc(slot, chunk) || chunk >= map.slots.length) continue;
    map.nextSlot = slot + 1;
    if (map.slots[chunk] !== -1) continue;
    map.slots[chunk] = slot;
    map.copied++;
  }
  return map;
}

export function chunkSizeOfMap(bytes: Buffer): number {
  return bytes.readUInt32LE(8);
}
