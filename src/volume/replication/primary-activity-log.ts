/**
 * The primary's activity log in use: a write enters it (its extents hot, durably recorded before the
 * write starts, commits grouped), leaves it when done, and the ranges the peers record of it
 * (reconciliation.ts) are the hot extents plus this term's failed writes. The pure part and the file
 * are activity-log.ts's; what must be durable before extents leave the log is the device's (a hook).
 */
import { DeviceError } from '../block-device.ts';
import {
  ActivityLogFile,
  ActivityLogState,
  DEFAULT_AL_EXTENT_SIZE,
  DEFAULT_AL_SLOTS,
} from './activity-log.ts';
import type { ByteRange } from './bitmap.ts';
import { mergeRanges, type Range } from './reconciliation.ts';
import type { SlotFile } from './state-files.ts';

export interface ActivityLogHooks {
  /** A new hot set is being committed: the peers record its ranges before any write into it reaches them. */
  ship(ranges: Range[]): void;
  /** Extents leave the log: what was written into them must be durable first (local disk, bitmaps). */
  persistForEviction(): Promise<void>;
}

export class PrimaryActivityLog {
  readonly size: number;
  readonly #state: ActivityLogState;
  readonly #file: ActivityLogFile;
  readonly #hooks: ActivityLogHooks;
  #waiters: Array<() => void> = [];
  /** An admission evicted extents since what they cover was last made durable. */
  #evictedSincePersist = false;
  /**
   * This term's failed writes, by byte range: some replicas may hold them and others not, so every
   * record shipped from now on keeps them, though their extents leave the log.
   */
  #failed: Range[] = [];
  /** The hot extents at the last commit before this process started (a crash as primary left them). */
  readonly hotAtOpen: number[];

  constructor(
    file: SlotFile,
    o: { size: number; extentSize?: number | undefined; slots?: number | undefined },
    hooks: ActivityLogHooks,
  ) {
    const slots = o.slots ?? DEFAULT_AL_SLOTS;
    const { log, hot } = ActivityLogFile.open(file, slots);
    this.#file = log;
    this.hotAtOpen = hot;
    this.#state = new ActivityLogState(o.extentSize ?? DEFAULT_AL_EXTENT_SIZE, slots);
    this.size = o.size;
    this.#hooks = hooks;
  }

  /** Byte ranges of hot extents (after a crash: every one may hold writes a peer never got). */
  rangesOf(hot: number[]): ByteRange[] {
    return ActivityLogState.crashRanges(hot, this.#state.extentSize, this.size);
  }

  /** What the peers record now: the hot extents and this term's failed writes. */
  ranges(hot: number[] = this.#state.hot): Range[] {
    return mergeRanges([...this.rangesOf(hot).map((r): Range => [r.offset, r.length]), ...this.#failed]);
  }

  /** Nothing for the peers to record (no hot extent, no failed write this term). */
  get empty(): boolean {
    return this.#state.hot.length === 0 && this.#failed.length === 0;
  }

  /** The hot extents now, as byte ranges. */
  hotRanges(): ByteRange[] {
    return this.rangesOf(this.#state.hot);
  }

  /** A new term (a promotion): earlier failed writes were reconciled with it. */
  newTerm(): void {
    this.#failed = [];
  }

  writeFailed(offset: number, length: number): void {
    this.#failed = mergeRanges([...this.#failed, [offset, length]]);
  }

  /** A write enters the log: once its extents are hot and that is durable (waits for a free slot). */
  async enter(offset: number, length: number): Promise<void> {
    for (;;) {
      const r = this.#state.admit(offset, length);
      if (r) {
        if (!r.mustCommit) return;
        // Bits for extents leaving the log must be durable before the log forgets them: the commit
        // that records the smaller hot set persists them first.
        if (r.evicted.length > 0) this.#evictedSincePersist = true;
        try {
          await this.#file.commitGrouped(
            () => {
              const hot = this.#state.hot;
              this.#hooks.ship(this.ranges(hot));
              return { extentSize: this.#state.extentSize, hot };
            },
            () => this.#persistForEviction(),
            (hot) => this.#state.committed(hot),
          );
        } catch (err) {
          this.leave(offset, length);
          throw new DeviceError('EIO', `activity log commit failed: ${(err as Error).message}`);
        }
        return;
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /** The write is done (acknowledged or failed): its extents may be evicted. */
  leave(offset: number, length: number): void {
    this.#state.complete(offset, length);
    for (const w of this.#waiters.splice(0)) w();
  }

  async #persistForEviction(): Promise<void> {
    if (!this.#evictedSincePersist) return;
    this.#evictedSincePersist = false;
    try {
      await this.#hooks.persistForEviction();
    } catch (err) {
      this.#evictedSincePersist = true;
      throw err;
    }
  }

  settled(): Promise<void> {
    return this.#file.settled();
  }

  close(): void {
    this.#file.close();
  }
}
