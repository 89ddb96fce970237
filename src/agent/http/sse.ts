/**
 * `/api/events/stream`: server-sent events for the dashboard. `status` (the brief status, sent when it
 * changed, checked every STATUS_MS) and `log` (new events of the cluster's log, polled every LOG_MS
 * while someone listens; an event that arrives late is sent when it arrives). One poller per agent, however
 * many clients.
 */
import type { ServerResponse } from 'node:http';
import type { EventRecord } from '../records.ts';

export const STATUS_MS = 500;
export const LOG_MS = 1000;
const KEEPALIVE_MS = 15_000;

/** One SSE frame (pure). */
export function sseFrame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/**
 * Events reach the store late and out of time order: each node flushes its own on its own loop, and keeps
 * them while etcd is away. Each poll looks back this far and sends what it has not sent yet.
 */
export const LATE_MS = 30_000;

export interface LogCursor {
  /** The newest event time seen; the next poll asks from `at - LATE_MS` on. */
  at: number;
  /** The events sent that are at or after `at - LATE_MS` (their time and identity). */
  seen: { at: number; id: string }[];
}

const idOf = (e: EventRecord) => `${e.at}\0${e.node}\0${e.text}`;

/** The events not sent yet (pure): `events` are oldest first, all at or after `cursor.at - LATE_MS`. */
export function freshEvents(
  cursor: LogCursor,
  events: EventRecord[],
): { fresh: EventRecord[]; cursor: LogCursor } {
  const sent = new Set(cursor.seen.map((s) => s.id));
  const fresh = events.filter((e) => !sent.has(idOf(e)));
  if (fresh.length === 0) return { fresh, cursor };
  const at = Math.max(cursor.at, ...fresh.map((e) => e.at));
  const seen = [...cursor.seen, ...fresh.map((e) => ({ at: e.at, id: idOf(e) }))].filter(
    (s) => s.at >= at - LATE_MS,
  );
  return { fresh, cursor: { at, seen } };
}

export interface StreamSource {
  status(): Promise<unknown>;
  /** Events at or after `since` (ms), oldest first; the newest `limit`. */
  events(limit: number, since?: number): Promise<EventRecord[]>;
}

export class EventStreamHub {
  readonly #src: StreamSource;
  readonly #clients = new Set<ServerResponse>();
  #statusText = '';
  #cursor: LogCursor | undefined;
  #timers: NodeJS.Timeout[] = [];
  #busy = { status: false, log: false };

  constructor(src: StreamSource) {
    this.#src = src;
  }

  get clients(): number {
    return this.#clients.size;
  }

  async add(res: ServerResponse): Promise<void> {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    this.#clients.add(res);
    res.on('close', () => {
      this.#clients.delete(res);
      if (this.#clients.size === 0) this.#stopTimers();
    });
    // The newcomer gets the state now and the recent log; the others only news.
    try {
      const [status, events] = await Promise.all([this.#src.status(), this.#src.events(100)]);
      res.write(sseFrame('status', status));
      res.write(sseFrame('log', events));
      if (!this.#cursor) this.#cursor = freshEvents({ at: 0, seen: [] }, events).cursor;
    } catch (err) {
      res.write(sseFrame('problem', { error: err instanceof Error ? err.message : String(err) }));
    }
    if (this.#timers.length === 0) this.#startTimers();
  }

  #broadcast(frame: string): void {
    for (const c of this.#clients) c.write(frame);
  }

  #startTimers(): void {
    this.#timers = [
      setInterval(() => void this.#pollStatus(), STATUS_MS),
      setInterval(() => void this.#pollLog(), LOG_MS),
      setInterval(() => this.#broadcast(': keepalive\n\n'), KEEPALIVE_MS),
    ];
    for (const t of this.#timers) t.unref();
  }

  #stopTimers(): void {
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    this.#cursor = undefined;
    this.#statusText = '';
  }

  async #pollStatus(): Promise<void> {
    if (this.#busy.status) return;
    this.#busy.status = true;
    try {
      const s = await this.#src.status();
      const text = JSON.stringify(s);
      if (text !== this.#statusText) {
        this.#statusText = text;
        this.#broadcast(`event: status\ndata: ${text}\n\n`);
      }
    } catch {
      // The next poll tries again; the dashboard shows the age of what it has.
    } finally {
      this.#busy.status = false;
    }
  }

  async #pollLog(): Promise<void> {
    if (this.#busy.log) return;
    this.#busy.log = true;
    try {
      const cur = this.#cursor ?? { at: Date.now(), seen: [] };
      const { fresh, cursor } = freshEvents(cur, await this.#src.events(500, cur.at - LATE_MS));
      this.#cursor = cursor;
      if (fresh.length) this.#broadcast(sseFrame('log', fresh));
    } catch {
      // etcd away: the next poll catches up from the cursor.
    } finally {
      this.#busy.log = false;
    }
  }

  close(): void {
    this.#stopTimers();
    for (const c of this.#clients) c.end();
    this.#clients.clear();
  }
}
