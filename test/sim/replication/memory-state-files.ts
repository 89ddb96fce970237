/**
 * The engine's small files (state-files.ts) in memory: a replace or a slot write is durable once it
 * resolves; one still in flight at a crash lands or not (seeded), as a rename or a sector write would.
 */
import type { ManualClock } from '../../../src/lib/clock.ts';
import type { SlotFile, StateFiles } from '../../../src/volume/replication/state-files.ts';

interface Pending {
  power: number;
  apply: () => void;
}

export class MemoryStateFiles {
  readonly clock: ManualClock;
  readonly random: () => number;
  readonly files = new Map<string, Buffer>();
  #power = 0;
  #pending = new Set<Pending>();

  constructor(clock: ManualClock, random: () => number) {
    this.clock = clock;
    this.random = random;
  }

  #later(apply: () => void): Promise<void> {
    const p: Pending = { power: this.#power, apply };
    this.#pending.add(p);
    return new Promise((resolve) => {
      this.clock.setTimer(() => {
        if (!this.#pending.delete(p)) return;
        apply();
        resolve();
      }, this.random() * 0.5);
    });
  }

  /** The files of this power-on. */
  open(): StateFiles {
    const power = this.#power;
    const alive = () => {
      if (power !== this.#power) throw new Error('state files of a crashed process');
    };
    const writeAt = (name: string, offset: number, data: Buffer) => {
      const old = this.files.get(name) ?? Buffer.alloc(0);
      const next = Buffer.alloc(Math.max(old.length, offset + data.length));
      old.copy(next);
      data.copy(next, offset);
      this.files.set(name, next);
    };
    return {
      path: (name) => `mem:${name}`,
      read: (name) => {
        const b = this.files.get(name);
        return b && Buffer.from(b);
      },
      replace: (name, data) => {
        alive();
        const copy = Buffer.from(data);
        return this.#later(() => this.files.set(name, copy));
      },
      replaceSync: (name, data) => {
        alive();
        this.files.set(name, Buffer.from(data));
      },
      appendSync: (name, data) => {
        alive();
        this.files.set(name, Buffer.concat([this.files.get(name) ?? Buffer.alloc(0), data]));
      },
      remove: (name) => {
        alive();
        this.files.delete(name);
      },
      openSlots: (name): SlotFile => {
        if (!this.files.has(name)) this.files.set(name, Buffer.alloc(0));
        return {
          initial: Buffer.from(this.files.get(name)!),
          writeAt: (offset, data) => {
            alive();
            const copy = Buffer.from(data);
            return this.#later(() => writeAt(name, offset, copy));
          },
          writeAtSync: (offset, data) => {
            alive();
            writeAt(name, offset, Buffer.from(data));
          },
          close: () => undefined,
        };
      },
    };
  }

  /** Power loss: writes in flight land or not, seeded; later calls of the old power-on throw. */
  crash(): void {
    this.#power++;
    for (const p of [...this.#pending].sort((a, b) => a.power - b.power)) if (this.random() < 0.5) p.apply();
    this.#pending.clear();
  }
}
