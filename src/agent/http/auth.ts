/**
 * Who asks (pure): the bearer token of a request, and a limit on failed attempts per source address so
 * tokens cannot be guessed by trying (docs/http.md).
 */

export const MAX_FAILURES = 10;
export const FAILURE_WINDOW_MS = 60_000;

/** The token of an `Authorization: Bearer ...` header; null when absent, undefined when malformed. */
export function bearerToken(header: string | undefined): string | null | undefined {
  if (header === undefined || header === '') return null;
  const m = /^Bearer ([A-Za-z0-9_\-.~+/]+=*)$/.exec(header.trim());
  return m ? m[1] : undefined;
}

/**
 * Failed authentications per address in a sliding window. While an address is over the limit every
 * request of its is refused (429), a right token included: trying on cannot tell a right guess.
 */
export class FailureLimiter {
  readonly #failures = new Map<string, number[]>();
  readonly #max: number;
  readonly #windowMs: number;

  constructor(max = MAX_FAILURES, windowMs = FAILURE_WINDOW_MS) {
    this.#max = max;
    this.#windowMs = windowMs;
  }

  #recent(address: string, now: number): number[] {
    const list = (this.#failures.get(address) ?? []).filter((t) => now - t < this.#windowMs);
    if (list.length) this.#failures.set(address, list);
    else this.#failures.delete(address);
    return list;
  }

  /** Seconds until the address may try again, or 0 when it may now. */
  blockedFor(address: string, now: number): number {
    const list = this.#recent(address, now);
    if (list.length < this.#max) return 0;
    return Math.max(1, Math.ceil((list[list.length - this.#max]! + this.#windowMs - now) / 1000));
  }

  fail(address: string, now: number): void {
    const list = this.#recent(address, now);
    list.push(now);
    this.#failures.set(address, list);
    // Bounded memory under a flood of addresses: the oldest entries go first.
    if (this.#failures.size > 10_000) this.#failures.delete(this.#failures.keys().next().value!);
  }
}
