/**
 * Who may touch which bitmap extents of the primary's disk now: application writes count themselves in
 * while in flight; a resync (or a verify's second look) holds extents, and application writes into them
 * wait until it lets go, while it waits for the writes already in flight there to finish (protocol C:
 * those are on every connected peer when they complete).
 */
import type { ByteRange } from './bitmap.ts';

export class ExtentHolds {
  readonly extentSize: number;
  /** Per extent: application writes in flight. */
  #writing = new Map<number, number>();
  /** Per extent: the hold a resync has on it. */
  #held = new Map<number, Promise<void>>();
  /** Holds waiting for application writes in their extents to finish. */
  #writeWaiters: Array<() => void> = [];

  constructor(extentSize: number) {
    this.extentSize = extentSize;
  }

  /** The first and last extent a byte range touches. */
  extents(offset: number, length: number): [number, number] {
    return [Math.floor(offset / this.extentSize), Math.floor((offset + length - 1) / this.extentSize)];
  }

  /**
   * Waits until no hold covers these extents, then counts a write in them in the same synchronous
   * step (with an await between the check and the claim, a resync could read a block while a write
   * to it starts).
   */
  async enterWrite([first, last]: [number, number]): Promise<void> {
    for (let hold = this.#holdOn(first, last); hold; hold = this.#holdOn(first, last)) await hold;
    for (let e = first; e <= last; e++) this.#writing.set(e, (this.#writing.get(e) ?? 0) + 1);
  }

  leaveWrite([first, last]: [number, number]): void {
    for (let e = first; e <= last; e++) this.#writing.set(e, (this.#writing.get(e) ?? 1) - 1);
    for (const w of this.#writeWaiters.splice(0)) w();
  }

  /** Some application write is in flight anywhere (a resync yields to it). */
  writesWaiting(): boolean {
    for (const n of this.#writing.values()) if (n > 0) return true;
    return false;
  }

  /** Runs `fn` with the extents of `r` held, once the writes in flight in them have finished. */
  async holding<T>(r: ByteRange, fn: () => Promise<T>): Promise<T> {
    const [first, last] = this.extents(r.offset, r.length);
    for (let hold = this.#holdOn(first, last); hold; hold = this.#holdOn(first, last)) await hold;
    let release: () => void = () => undefined;
    const hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    for (let e = first; e <= last; e++) this.#held.set(e, hold);
    try {
      while (this.#anyWriting(first, last))
        await new Promise<void>((resolve) => this.#writeWaiters.push(resolve));
      return await fn();
    } finally {
      for (let e = first; e <= last; e++) this.#held.delete(e);
      release();
    }
  }

  #holdOn(first: number, last: number): Promise<void> | undefined {
    for (let e = first; e <= last; e++) {
      const hold = this.#held.get(e);
      if (hold) return hold;
    }
    return undefined;
  }

  #anyWriting(first: number, last: number): boolean {
    for (let e = first; e <= last; e++) if ((this.#writing.get(e) ?? 0) > 0) return true;
    return false;
  }
}
