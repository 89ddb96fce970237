/**
 * Orders a replica's operations the way protocol C needs, while letting independent ones overlap.
 * Operations are submitted in arrival order, each with the byte range it touches (or none, for a
 * barrier). An operation starts as soon as every earlier operation that overlaps its range has
 * finished; a barrier waits for every earlier operation. So a later write to a block can never
 * overtake an earlier one, a FLUSH covers every write that arrived before it, and writes to
 * different blocks go to the disk concurrently. Later operations wait for a barrier only if it
 * says so (`holdsLater`: a generation adoption); a FLUSH does not hold the writes behind it.
 */

export interface ApplyRange {
  offset: number;
  length: number;
}

interface Pending {
  range: ApplyRange | undefined;
  holdsLater: boolean;
  done: Promise<void>;
}

export class ApplyQueue {
  #pending: Pending[] = [];

  /** Operations submitted and not yet finished. */
  get inFlight(): number {
    return this.#pending.length;
  }

  /**
   * Runs `op` after the earlier operations it depends on (all of them when `range` is undefined).
   * The result is `op`'s; a failed earlier operation does not stop later ones.
   */
  submit<T>(
    range: ApplyRange | undefined,
    op: () => Promise<T>,
    o: { holdsLater?: boolean } = {},
  ): Promise<T> {
    const deps: Promise<void>[] = [];
    for (const p of this.#pending) {
      const depends = !range || (p.range ? overlaps(range, p.range) : p.holdsLater);
      if (depends) deps.push(p.done);
    }
    const result =
      deps.length === 0 ? op() : (deps.length === 1 ? deps[0]! : Promise.all(deps)).then(() => op());
    const entry: Pending = {
      range,
      holdsLater: range === undefined && (o.holdsLater ?? true),
      done: result.then(
        () => undefined,
        () => undefined,
      ),
    };
    this.#pending.push(entry);
    void entry.done.then(() => {
      const i = this.#pending.indexOf(entry);
      if (i >= 0) this.#pending.splice(i, 1);
    });
    return result;
  }

  /** Resolves when everything submitted so far has finished. */
  idle(): Promise<void> {
    return Promise.all(this.#pending.map((p) => p.done)).then(() => undefined);
  }
}

function overlaps(a: ApplyRange, b: ApplyRange): boolean {
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}
