/**
 * Where two replicas differ, and keeping the blocks a split-brain's loser is about to lose: SHA-256
 * digests per extent on both sides (the replica server answers DIGEST with `blockDigests`), each
 * candidate looked at again with writes to it held, the loser's blocks saved (saved-blocks.ts) before
 * a resync overwrites them.
 */
import { createHash } from 'node:crypto';
import type { BlockDevice } from '../block-device.ts';
import type { ByteRange } from './bitmap.ts';
import { encodeSavedBlock } from './saved-blocks.ts';

export interface VerifyResult {
  peer: string;
  bytesCompared: number;
  mismatches: ByteRange[];
}

/** How much is compared per digest request. */
const VERIFY_SPAN = 64 * 1024 * 1024;

/** SHA-256 of each `chunk`-sized piece of [offset, offset+length). */
export async function blockDigests(
  device: BlockDevice,
  offset: number,
  length: number,
  chunk: number,
): Promise<Buffer> {
  const out: Buffer[] = [];
  for (let at = offset; at < offset + length; at += chunk) {
    const n = Math.min(chunk, offset + length - at);
    out.push(
      createHash('sha256')
        .update(await device.read(at, n))
        .digest(),
    );
  }
  return Buffer.concat(out);
}

export interface Comparison {
  local: BlockDevice;
  size: number;
  /** Bytes per digest (the bitmap's extent). */
  chunk: number;
  peer: string;
  peerDigests(offset: number, length: number, chunk: number): Promise<Buffer | undefined>;
  /** Runs `fn` with writes into `r` held (ExtentHolds.holding). */
  holding<T>(r: ByteRange, fn: () => Promise<T>): Promise<T>;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

function append(ranges: ByteRange[], r: ByteRange): void {
  const last = ranges[ranges.length - 1];
  if (last && last.offset + last.length === r.offset) last.length += r.length;
  else ranges.push({ ...r });
}

/** The extents whose content differs between this replica and the peer, compared while the volume is live. */
export async function findDiverging(c: Comparison): Promise<ByteRange[]> {
  const candidates: ByteRange[] = [];
  for (let at = 0; at < c.size; at += VERIFY_SPAN) {
    c.onProgress?.(at, c.size);
    const len = Math.min(VERIFY_SPAN, c.size - at);
    const [mine, theirs] = await Promise.all([
      blockDigests(c.local, at, len, c.chunk),
      c.peerDigests(at, len, c.chunk),
    ]);
    if (!theirs || theirs.length !== mine.length)
      throw new Error(`peer ${c.peer} did not answer the digest request`);
    for (let i = 0; i * 32 < mine.length; i++) {
      if (mine.subarray(i * 32, i * 32 + 32).equals(theirs.subarray(i * 32, i * 32 + 32))) continue;
      const offset = at + i * c.chunk;
      append(candidates, { offset, length: Math.min(c.chunk, c.size - offset) });
    }
  }
  // A write in flight during the comparison looks like a difference: each candidate extent is
  // compared again with writes to it held.
  const confirmed: ByteRange[] = [];
  for (const m of candidates) {
    for (let at = m.offset; at < m.offset + m.length; at += c.chunk) {
      const r = { offset: at, length: Math.min(c.chunk, m.offset + m.length - at) };
      const same = await c.holding(r, async () => {
        const [mine, theirs] = await Promise.all([
          blockDigests(c.local, r.offset, r.length, c.chunk),
          c.peerDigests(r.offset, r.length, c.chunk),
        ]);
        return theirs !== undefined && mine.equals(theirs);
      });
      if (!same) append(confirmed, r);
    }
  }
  return confirmed;
}

/**
 * Reads the peer's blocks in `ranges` (per `chunk`) and appends each to the saved-blocks file
 * synchronously, before anything overwrites it; `saved` is called per block (the caller marks it
 * for the resync). Returns the bytes saved.
 */
export async function saveDiverging(o: {
  ranges: ByteRange[];
  chunk: number;
  peer: string;
  read(offset: number, length: number): Promise<Buffer | undefined>;
  appendSync(record: Buffer): void;
  saved(offset: number, length: number): void;
}): Promise<number> {
  let bytes = 0;
  for (const r of o.ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += o.chunk) {
      const len = Math.min(o.chunk, r.offset + r.length - at);
      const data = await o.read(at, len);
      if (!data) throw new Error(`could not read diverging block at ${at} from ${o.peer}`);
      o.appendSync(encodeSavedBlock(at, data));
      bytes += len;
      o.saved(at, len);
    }
  }
  return bytes;
}
