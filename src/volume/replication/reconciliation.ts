/**
 * Reconciliation among survivors (pure; DRBD 9's "reconciliation resync"). A primary that dies with
 * writes on the wire can leave its surviving secondaries with different bytes in those blocks while
 * each counts as in sync, and its activity log died with it. So each secondary keeps, durably, the
 * byte ranges of its primary's activity log, which the primary ships whenever its hot set changes
 * and before any write into a newly hot extent: every write a secondary applied that another may
 * lack lies in them. A new primary marks, for each peer, the union of its own ranges and the peer's
 * out of sync and resyncs them from itself (it is the new truth).
 *
 * A secondary's record: `current`, the ranges of the primary (node, epoch) it last heard from, and
 * `carried`, those of earlier primaries that no primary has resynced here since. Only a primary's
 * "you now hold my data" STATE (after a resync, or with a clean bitmap) clears `carried`.
 */
import { crc32 } from 'node:zlib';
import { z } from 'zod';

/** [offset, length] in bytes, as PeerState carries ranges. */
export type Range = [number, number];

export interface ActivitySource {
  node: string;
  epoch: number;
}

export interface ActivityRecord {
  from: ActivitySource | undefined;
  current: Range[];
  carried: Range[];
}

export const NO_ACTIVITY: ActivityRecord = { from: undefined, current: [], carried: [] };

/** Ranges per list, in a record, a message and a STATE (more are merged across their gaps). */
export const MAX_RANGES = 128;

/**
 * Sorted, overlapping and adjacent ranges joined, at most `max` of them: beyond that the two
 * ranges with the smallest gap between them become one (more is resynced, nothing is missed).
 */
export function mergeRanges(ranges: Iterable<Range>, max = MAX_RANGES): Range[] {
  const sorted = [...ranges].filter(([, l]) => l > 0).sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  for (const [o, l] of sorted) {
    const last = out[out.length - 1];
    if (last && o <= last[0] + last[1]) last[1] = Math.max(last[1], o + l - last[0]);
    else out.push([o, l]);
  }
  while (out.length > Math.max(1, max)) {
    let best = 0;
    for (let i = 1; i < out.length - 1; i++) {
      const gap = out[i + 1]![0] - (out[i]![0] + out[i]![1]);
      if (gap < out[best + 1]![0] - (out[best]![0] + out[best]![1])) best = i;
    }
    const [a, b] = [out[best]!, out[best + 1]!];
    out.splice(best, 2, [a[0], b[0] + b[1] - a[0]]);
  }
  return out;
}

function sameSource(a: ActivitySource | undefined, b: ActivitySource | undefined): boolean {
  return a !== undefined && b !== undefined && a.node === b.node && a.epoch === b.epoch;
}

/**
 * A primary's activity-log ranges arrive. `unflushed`: ranges this replica applied without making
 * them durable yet (it may lose them in a crash while a peer keeps them), kept until flushed.
 * Another primary's ranges than the last ones: the last ones are carried until reconciled.
 */
export function receiveActivity(
  rec: ActivityRecord,
  from: ActivitySource,
  ranges: Range[],
  unflushed: Range[] = [],
): ActivityRecord {
  const current = mergeRanges([...ranges, ...unflushed]);
  if (sameSource(rec.from, from)) return { from, current, carried: rec.carried };
  return { from, current, carried: mergeRanges([...rec.carried, ...rec.current]) };
}

/**
 * Primary `by` declared that this replica holds its data (it resynced what this replica reported):
 * no earlier primary's leftovers remain, nor the current ones when they are not `by`'s.
 */
export function reconciledByPrimary(rec: ActivityRecord, by: ActivitySource): ActivityRecord {
  const keepCurrent = sameSource(rec.from, by) || rec.current.length === 0;
  if (rec.carried.length === 0 && keepCurrent) return rec;
  return { from: rec.from, current: keepCurrent ? rec.current : [], carried: [] };
}

/** At its promotion, a node resyncs to every peer what it holds from earlier primaries. */
export function promotionMarks(rec: ActivityRecord): Range[] {
  return mergeRanges([...rec.current, ...rec.carried]);
}

/** What a secondary reports in its STATE (protocol version 4). */
export interface ActivityReport {
  from: string;
  epoch: number;
  current: Range[];
  carried: Range[];
}

export function activityReport(rec: ActivityRecord): ActivityReport | undefined {
  if (!rec.from || (rec.current.length === 0 && rec.carried.length === 0)) return undefined;
  return { from: rec.from.node, epoch: rec.from.epoch, current: rec.current, carried: rec.carried };
}

/**
 * What a primary (`self`) marks out of sync for a peer that reports `peer`: its current ranges
 * unless they are this primary's own of this term (its bitmap covers what it sent), and what it
 * carries from earlier primaries. Ranges beyond the device are dropped.
 */
export function reconcileMarks(
  self: ActivitySource,
  peer: ActivityReport | undefined,
  size: number,
): Range[] {
  if (!peer) return [];
  const own = peer.from === self.node && peer.epoch === self.epoch;
  return mergeRanges([...(own ? [] : peer.current), ...peer.carried])
    .filter(([o]) => o < size)
    .map(([o, l]): Range => [o, Math.min(l, size - o)]);
}

// ---- the record on disk: two alternating slots, each JSON with a sequence number and a CRC

const MAGIC = 0x43565241; // "CVRA"
const ranges = z.array(z.tuple([z.number().int().nonnegative(), z.number().int().positive()]));
const recordSchema = z.object({
  from: z.object({ node: z.string(), epoch: z.number().int().nonnegative() }).optional(),
  current: ranges,
  carried: ranges,
});
export const ACTIVITY_SLOT_BYTES = 16 * 1024;

export function encodeActivitySlot(seq: number, rec: ActivityRecord): Buffer {
  const buf = Buffer.alloc(ACTIVITY_SLOT_BYTES);
  const json = Buffer.from(JSON.stringify(rec));
  if (json.length > ACTIVITY_SLOT_BYTES - 20) throw new Error('activity record too large for its slot');
  buf.writeUInt32BE(MAGIC, 0);
  buf.writeBigUInt64BE(BigInt(seq), 4);
  buf.writeUInt32BE(json.length, 12);
  json.copy(buf, 16);
  buf.writeUInt32BE(crc32(buf.subarray(0, buf.length - 4)), buf.length - 4);
  return buf;
}

export function decodeActivitySlot(buf: Buffer): { seq: number; rec: ActivityRecord } | undefined {
  if (buf.length !== ACTIVITY_SLOT_BYTES || buf.readUInt32BE(0) !== MAGIC) return undefined;
  if (crc32(buf.subarray(0, buf.length - 4)) !== buf.readUInt32BE(buf.length - 4)) return undefined;
  const len = buf.readUInt32BE(12);
  if (len > ACTIVITY_SLOT_BYTES - 20) return undefined;
  try {
    const r = recordSchema.safeParse(JSON.parse(buf.subarray(16, 16 + len).toString('utf8')));
    if (!r.success) return undefined;
    const { from, current, carried } = r.data;
    return { seq: Number(buf.readBigUInt64BE(4)), rec: { from, current, carried } };
  } catch {
    return undefined;
  }
}
