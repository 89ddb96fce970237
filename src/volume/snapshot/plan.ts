/**
 * Pure copy-on-write decisions for volume snapshots (no I/O): which chunks a write must copy into
 * which snapshots first, where each piece of a snapshot read comes from, and what a rollback writes
 * back. The daemon's snapshot code (snapshots.ts) does the I/O these plans describe.
 */

/** The chunks [first, last] that bytes [offset, offset + length) touch. */
export function chunkRange(
  offset: number,
  length: number,
  chunkSize: number,
): { first: number; last: number } {
  return {
    first: Math.floor(offset / chunkSize),
    last: Math.floor((offset + Math.max(length, 1) - 1) / chunkSize),
  };
}

/** A snapshot as the plans see it: its name and block map (chunk -> slot, -1 = not copied yet). */
export interface MapView {
  name: string;
  slots: Int32Array;
}

export interface ChunkCopy {
  chunk: number;
  /** The snapshots that do not hold this chunk yet: each gets the old contents before the write. */
  into: string[];
}

/**
 * What a write to chunks [first, last] must copy first: every chunk some snapshot does not hold
 * yet. Each snapshot keeps its own copy (no chain between snapshots), so deleting or dropping one
 * never touches another; the price is one copy per snapshot on a chunk's first overwrite.
 */
export function planCopies(first: number, last: number, snapshots: readonly MapView[]): ChunkCopy[] {
  const out: ChunkCopy[] = [];
  for (let chunk = first; chunk <= last; chunk++) {
    const into = snapshots.filter((s) => (s.slots[chunk] ?? 0) === -1).map((s) => s.name);
    if (into.length > 0) out.push({ chunk, into });
  }
  return out;
}

/** One piece of a snapshot read: from the volume as it is now, or from a copy-on-write slot. */
export type ReadSegment =
  | { from: 'live'; offset: number; length: number; at: number; firstChunk: number; lastChunk: number }
  | { from: 'cow'; slot: number; within: number; length: number; at: number };

/**
 * Where bytes [offset, offset + length) of a snapshot come from: chunks it holds from its slots,
 * the others from the live volume (unchanged since the snapshot); neighbouring live chunks merge
 * into one read. `at` is the position in the caller's buffer.
 */
export function planRead(
  offset: number,
  length: number,
  chunkSize: number,
  slots: Int32Array,
): ReadSegment[] {
  const out: ReadSegment[] = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const chunk = Math.floor(pos / chunkSize);
    const within = pos - chunk * chunkSize;
    const n = Math.min(chunkSize - within, end - pos);
    const slot = slots[chunk] ?? -1;
    const prev = out[out.length - 1];
    if (slot >= 0) out.push({ from: 'cow', slot, within, length: n, at: pos - offset });
    else if (prev?.from === 'live' && prev.offset + prev.length === pos) {
      prev.length += n;
      prev.lastChunk = chunk;
    } else
      out.push({
        from: 'live',
        offset: pos,
        length: n,
        at: pos - offset,
        firstChunk: chunk,
        lastChunk: chunk,
      });
    pos += n;
  }
  return out;
}

/**
 * What a rollback writes back: the byte ranges of every chunk the snapshot holds (the others are
 * unchanged since it was taken), neighbours merged up to `maxLength` per range.
 */
export function planRollback(
  slots: Int32Array,
  chunkSize: number,
  size: number,
  maxLength = 1024 * 1024,
): Array<{ offset: number; length: number }> {
  const out: Array<{ offset: number; length: number }> = [];
  for (let chunk = 0; chunk < slots.length; chunk++) {
    if ((slots[chunk] ?? -1) < 0) continue;
    const offset = chunk * chunkSize;
    const length = Math.min(chunkSize, size - offset);
    const prev = out[out.length - 1];
    if (prev && prev.offset + prev.length === offset && prev.length + length <= maxLength)
      prev.length += length;
    else out.push({ offset, length });
  }
  return out;
}
