/**
 * The file a split-brain resolution leaves behind: the discarded side's diverging blocks, saved
 * before they are overwritten, so that an operator can still recover them. Records of offset (u64
 * big-endian), length (u32 big-endian) and the data, one after the other.
 */
import type { ByteRange } from './bitmap.ts';

const HEAD = 12;

export interface SavedBlock extends ByteRange {
  data: Buffer;
}

/** The file's name for blocks discarded from `peer` at `at` (ms since the epoch). */
export function savedBlocksName(peer: string, at: number): string {
  return `discarded-${peer}-${new Date(at).toISOString().replace(/[:.]/g, '-')}.bin`;
}

/** One record, to append. */
export function encodeSavedBlock(offset: number, data: Buffer): Buffer {
  const head = Buffer.alloc(HEAD);
  head.writeBigUInt64BE(BigInt(offset), 0);
  head.writeUInt32BE(data.length, 8);
  return Buffer.concat([head, data]);
}

/** Every whole record of a file's content (a torn last record is left out). */
export function decodeSavedBlocks(content: Buffer): SavedBlock[] {
  const out: SavedBlock[] = [];
  for (let at = 0; at + HEAD <= content.length; ) {
    const offset = Number(content.readBigUInt64BE(at));
    const length = content.readUInt32BE(at + 8);
    if (at + HEAD + length > content.length) break;
    out.push({ offset, length, data: content.subarray(at + HEAD, at + HEAD + length) });
    at += HEAD + length;
  }
  return out;
}
