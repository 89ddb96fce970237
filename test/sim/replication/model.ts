/**
 * What the application was told: for each block, the last write acknowledged, whether a FLUSH
 * acknowledged it since, and which nodes held it when it was acknowledged. Blocks whose content is
 * unknown (a write failed, or was in flight when its primary died) are left out until the next
 * acknowledged write.
 */

export const BLOCK = 4096;
const MAGIC = 0x53494d57; // "SIMW"

export interface AckedWrite {
  stamp: number;
  data: Buffer;
  flushed: boolean;
  /** Nodes whose disk held the data when it was acknowledged, and whether each crashed since. */
  holders: Set<string>;
  /** The primary that acknowledged it. */
  writer: string;
  crashedSince: Set<string>;
  ackedAtStep: number;
}

/** A block's content for a write: the stamp, block and epoch up front, then a pattern of the stamp. */
export function blockData(stamp: number, block: number, epoch: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt32BE(stamp, 4);
  b.writeUInt32BE(block, 8);
  b.writeUInt32BE(epoch, 12);
  for (let i = 16; i < BLOCK; i++) b[i] = (stamp * 31 + i) & 0xff;
  return b;
}

/** The stamp a block's content carries (0: never written). */
export function stampOf(content: Buffer): number {
  return content.readUInt32BE(0) === MAGIC ? content.readUInt32BE(4) : 0;
}

export class Model {
  readonly blocks: number;
  acked = new Map<number, AckedWrite>();
  /** Blocks with a write in flight (at most one each). */
  inflight = new Set<number>();
  uncertain = new Set<number>();
  /** Writes acknowledged since the last flush was started, per block. */
  stamp = 0;

  constructor(blocks: number) {
    this.blocks = blocks;
  }

  /** Blocks whose content must be checked: an acknowledged write, nothing in flight, not unknown. */
  *known(): Iterable<[number, AckedWrite]> {
    for (const [b, w] of this.acked) if (!this.inflight.has(b) && !this.uncertain.has(b)) yield [b, w];
  }

  crashed(node: string): void {
    for (const w of this.acked.values()) w.crashedSince.add(node);
  }

  /**
   * An unflushed write may be gone only when the machine that acknowledged it lost power since (its
   * application died with it, as on a local disk; a crashed primary that comes back resyncs its
   * activity-log extents to the others) or every node that held it did.
   */
  mayBeLost(w: AckedWrite): boolean {
    return !w.flushed && (w.crashedSince.has(w.writer) || [...w.holders].every((n) => w.crashedSince.has(n)));
  }
}
