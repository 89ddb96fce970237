/**
 * Which heartbeats are new (pure): a sender numbers its packets per receiver and link from 1 in each
 * boot, and its boot id grows across restarts (see `nextBootId`). So a packet is new when it comes from
 * a later boot, or from the same boot with a higher number; anything else is a replay (or a packet
 * reordered behind a newer one, which is as stale for a heartbeat).
 */

export interface SequencePosition {
  /** 0: nothing accepted yet. */
  boot: number;
  seq: number;
}

export type SequenceVerdict =
  | {
      fresh: true /** Packets skipped since the last accepted one (null: a new boot, unknown). */;
      gap: number | null;
    }
  | { fresh: false };

export function checkSequence(last: SequencePosition, boot: number, seq: number): SequenceVerdict {
  if (boot > last.boot) return { fresh: true, gap: null };
  if (boot === last.boot && seq > last.seq) return { fresh: true, gap: seq - last.seq - 1 };
  return { fresh: false };
}

/**
 * This process's boot id: later than any earlier one of the node even if the wall clock stepped back
 * (the last one is kept in the state dir), and about the wall clock otherwise (so a node whose state
 * dir was lost still starts above its old packets, which are at least that old).
 */
export function nextBootId(previous: number | undefined, wallMs: number): number {
  return Math.max(Math.floor(wallMs), (previous ?? 0) + 1);
}
