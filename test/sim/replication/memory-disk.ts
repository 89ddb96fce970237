/**
 * A simulated disk (BlockDevice) that knows, per 512-byte sector, what is durable and what was
 * written but not yet flushed; a crash keeps a seeded subset of the unflushed sectors (a disk cache
 * loses some, in any order) and drops writes still in flight. Every call completes after a seeded
 * delay on the simulation's clock, so overlapping calls interleave differently per seed.
 */
import type { ManualClock } from '../../../src/lib/clock.ts';
import type { BlockDevice } from '../../../src/volume/block-device.ts';

const SECTOR = 512;

export class MemoryDisk {
  readonly size: number;
  readonly clock: ManualClock;
  readonly random: () => number;
  /** What survives a crash. */
  durable: Buffer;
  /** What reads see (durable plus the writes not flushed yet). */
  current: Buffer;
  #dirty = new Set<number>();
  /** Bumped by each crash: calls of an earlier power-on never complete. */
  #power = 0;
  /** Called with every write as it lands (the checker watches what reaches a disk). */
  onWrite: ((offset: number, data: Buffer) => void) | undefined;
  maxDelayMs = 0.3;

  constructor(size: number, clock: ManualClock, random: () => number) {
    this.size = size;
    this.clock = clock;
    this.random = random;
    this.durable = Buffer.alloc(size);
    this.current = Buffer.alloc(size);
  }

  /** The BlockDevice of this power-on. */
  open(): BlockDevice {
    const power = this.#power;
    const later = <T>(fn: () => T): Promise<T> =>
      new Promise((resolve) => {
        this.clock.setTimer(() => {
          if (power === this.#power) resolve(fn());
        }, this.random() * this.maxDelayMs);
      });
    const check = (offset: number, length: number) => {
      if (offset < 0 || offset + length > this.size)
        throw new Error(`I/O beyond the disk: ${offset}+${length}`);
    };
    return {
      size: this.size,
      read: (offset, length) => {
        check(offset, length);
        return later(() => Buffer.from(this.current.subarray(offset, offset + length)));
      },
      write: (offset, data) => {
        check(offset, data.length);
        const copy = Buffer.from(data);
        return later(() => this.#land(offset, copy, false));
      },
      writeDurable: (offset, data) => {
        check(offset, data.length);
        const copy = Buffer.from(data);
        return later(() => this.#land(offset, copy, true));
      },
      flush: () => {
        const covered = [...this.#dirty];
        return later(() => {
          for (const s of covered) {
            this.current.copy(this.durable, s * SECTOR, s * SECTOR, (s + 1) * SECTOR);
            this.#dirty.delete(s);
          }
        });
      },
      close: async () => undefined,
    };
  }

  #land(offset: number, data: Buffer, durable: boolean): void {
    this.onWrite?.(offset, data);
    data.copy(this.current, offset);
    const first = Math.floor(offset / SECTOR);
    const last = Math.floor((offset + data.length - 1) / SECTOR);
    for (let s = first; s <= last; s++) {
      if (durable) {
        this.current.copy(this.durable, s * SECTOR, s * SECTOR, (s + 1) * SECTOR);
        this.#dirty.delete(s);
      } else this.#dirty.add(s);
    }
  }

  /** Power loss: each unflushed sector survives or not (seeded); calls in flight are lost. */
  crash(): { lostSectors: number } {
    this.#power++;
    let lost = 0;
    for (const s of [...this.#dirty].sort((a, b) => a - b)) {
      if (this.random() < 0.5) this.current.copy(this.durable, s * SECTOR, s * SECTOR, (s + 1) * SECTOR);
      else lost++;
    }
    this.#dirty.clear();
    this.current = Buffer.from(this.durable);
    return { lostSectors: lost };
  }
}
