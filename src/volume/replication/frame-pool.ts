/**
 * Reusable receive buffers for large frames. A 1 MiB write arrives in many socket chunks and is
 * gathered into one buffer (the one copy the receive path makes); allocating a fresh 1 MiB buffer
 * per frame made the garbage collector the replica's largest CPU cost. A slot goes back to the pool
 * when its owner is done (the write reached the disk); a slot never given back is simply collected.
 *
 * Slots come from allocAlignedBuffers with the data of a WRITE frame (offset WRITE_DATA_LEAD) on a
 * DIRECT_IO_ALIGNMENT boundary, so LocalDevice writes it with O_DIRECT straight from the slot,
 * without staging it in a bounce buffer.
 */
import { allocAlignedBuffers } from '../../lib/aligned-buffers.ts';
import { HEADER_LENGTH, MAC_LENGTH, MAX_PAYLOAD } from './frame.ts';

/** Frames at least this long use pooled slots; smaller ones are cheap to allocate. */
export const POOLED_FRAME_MIN = 64 * 1024;
export const SLOT_SIZE = HEADER_LENGTH + MAX_PAYLOAD + MAC_LENGTH;
/** Offset of a WRITE frame's data in the frame: header, then id u32, offset u48, flag u8. */
export const WRITE_DATA_LEAD = HEADER_LENGTH + 11;

export type SlotAllocator = (size: number, count: number, lead: number) => Buffer[];

export class FramePool {
  readonly maxIdle: number;
  #idle: Buffer[] = [];
  #alloc: SlotAllocator;
  /** Slots made so far (tests and status). */
  allocated = 0;

  constructor(o: { maxIdle?: number; allocator?: SlotAllocator } = {}) {
    this.maxIdle = o.maxIdle ?? 32;
    this.#alloc = o.allocator ?? allocAlignedBuffers;
  }

  /** A slot of SLOT_SIZE bytes (its first `n` are what the caller uses). */
  acquire(): Buffer {
    const slot = this.#idle.pop();
    if (slot) return slot;
    this.allocated += 4;
    const [first, ...rest] = this.#alloc(SLOT_SIZE, 4, WRITE_DATA_LEAD);
    this.#idle.push(...rest);
    return first!;
  }

  release(slot: Buffer): void {
    if (slot.length === SLOT_SIZE && this.#idle.length < this.maxIdle && !this.#idle.includes(slot))
      this.#idle.push(slot);
  }
}
