/**
 * A replica's durable record of the activity-log ranges its primaries shipped to it (the decisions
 * are reconciliation.ts's): file `primary-activity`, two alternating CRC-protected slots, so that a
 * torn write leaves the previous record readable. Changes are saved in order; each resolves once
 * its record is on stable storage.
 */
import {
  ACTIVITY_SLOT_BYTES,
  type ActivityRecord,
  type ActivitySource,
  decodeActivitySlot,
  encodeActivitySlot,
  NO_ACTIVITY,
  type Range,
  receiveActivity,
  reconciledByPrimary,
} from './reconciliation.ts';
import type { SlotFile, StateFiles } from './state-files.ts';

export class ReceivedActivity {
  #file: SlotFile;
  #seq: number;
  #record: ActivityRecord;
  #saving: Promise<void> = Promise.resolve();

  constructor(files: StateFiles) {
    this.#file = files.openSlots('primary-activity');
    let best: { seq: number; rec: ActivityRecord } | undefined;
    for (let i = 0; i < 2; i++) {
      const buf = this.#file.initial.subarray(i * ACTIVITY_SLOT_BYTES, (i + 1) * ACTIVITY_SLOT_BYTES);
      const slot = buf.length === ACTIVITY_SLOT_BYTES ? decodeActivitySlot(buf) : undefined;
      if (slot && (!best || slot.seq > best.seq)) best = slot;
    }
    this.#seq = best?.seq ?? 0;
    this.#record = best?.rec ?? NO_ACTIVITY;
  }

  get record(): ActivityRecord {
    return this.#record;
  }

  /** A primary's ranges (see receiveActivity); resolves once durable. */
  receive(from: ActivitySource, ranges: Range[], unflushed: Range[] = []): Promise<void> {
    return this.#save(receiveActivity(this.#record, from, ranges, unflushed));
  }

  /** Primary `by` resynced this replica: earlier primaries' ranges are done with. */
  reconciled(by: ActivitySource): Promise<void> {
    const next = reconciledByPrimary(this.#record, by);
    return next === this.#record ? this.#saving : this.#save(next);
  }

  /** This node became primary and marked its ranges out of sync for every peer (durably). */
  clear(): Promise<void> {
    // Nothing to forget (a clean handover shipped no ranges): no write, promotion stays fast.
    if (this.#record.current.length === 0 && this.#record.carried.length === 0) return this.#saving;
    return this.#save(NO_ACTIVITY);
  }

  #save(rec: ActivityRecord): Promise<void> {
    this.#record = rec;
    const job = this.#saving.then(() => {
      this.#seq++;
      return this.#file.writeAt((this.#seq % 2) * ACTIVITY_SLOT_BYTES, encodeActivitySlot(this.#seq, rec));
    });
    this.#saving = job.catch(() => undefined);
    return job;
  }

  close(): void {
    this.#file.close();
  }
}
