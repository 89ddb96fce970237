/**
 * A simulated network for the replication engine (transport.ts): TCP-like connections that deliver
 * in order after a seeded delay, and that the simulation can cut (both ends closed at once), stall
 * (a partition: nothing passes until it heals, like TCP retransmitting; the liveness timeout of a
 * Connection ends it meanwhile) or silence (a node losing power: its peers hear nothing more).
 * Time is the simulation's ManualClock; nothing happens on its own.
 */
import type { ManualClock } from '../../../src/lib/clock.ts';
import type { Dialing, Endpoint, Listener, Transport } from '../../../src/volume/replication/transport.ts';

type Handler = (...args: never[]) => void;

/** One end of a simulated connection. */
class MemoryEndpoint implements Dialing {
  readonly net: MemoryNetwork;
  readonly node: string;
  remote: MemoryEndpoint | undefined;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  closed = false;
  /** Silenced by a power loss: it neither sends nor receives, and says nothing. */
  dead = false;
  /** When the last chunk sent from this end is due at the other (in-order delivery). */
  lastDue = 0;
  #handlers = new Map<string, Handler[]>();

  constructor(net: MemoryNetwork, node: string) {
    this.net = net;
    this.node = node;
  }

  on(event: string, listener: Handler): this {
    const list = this.#handlers.get(event) ?? [];
    list.push(listener);
    this.#handlers.set(event, list);
    return this;
  }

  once(event: string, listener: Handler): this {
    const wrapped = ((...args: never[]) => {
      this.off(event, wrapped);
      listener(...args);
    }) as Handler;
    return this.on(event, wrapped);
  }

  off(event: string, listener: Handler): this {
    const list = this.#handlers.get(event);
    if (list)
      this.#handlers.set(
        event,
        list.filter((l) => l !== listener),
      );
    return this;
  }

  emit(event: string, ...args: unknown[]): void {
    for (const l of [...(this.#handlers.get(event) ?? [])]) (l as (...a: unknown[]) => void)(...args);
  }

  cork(): void {}
  uncork(): void {}

  write(chunk: Buffer): boolean {
    if (this.closed || this.dead || !this.remote) return false;
    this.net.deliver(this, Buffer.from(chunk));
    return true;
  }

  end(done?: () => void): void {
    this.destroy();
    done?.();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    // FIN after what was sent; this end hears its own close at once (next event).
    this.net.later(0, () => this.emit('close'));
    const remote = this.remote;
    if (remote && !this.dead) this.net.deliverClose(this, remote);
  }

  /** A reset: closed now, nothing more delivered either way. */
  reset(): void {
    if (this.closed) return;
    this.closed = true;
    this.net.later(0, () => this.emit('close'));
  }
}

interface Stalled {
  from: MemoryEndpoint;
  fn: () => void;
}

export interface NetworkOptions {
  /** Per-message delay, ms, drawn uniformly in [min, max]. */
  minDelayMs: number;
  maxDelayMs: number;
  /** How long a connect to an unreachable node takes to fail. */
  connectTimeoutMs: number;
}

export class MemoryNetwork {
  readonly clock: ManualClock;
  readonly random: () => number;
  readonly o: NetworkOptions;
  #listeners = new Map<string, { node: string; accept: (e: Endpoint) => void }>();
  #endpoints = new Set<MemoryEndpoint>();
  /** Node pairs that cannot reach each other ("a|b", both orders). */
  #blocked = new Set<string>();
  #stalled: Stalled[] = [];
  #nextPort = 40000;
  /** Counters by kind, for the run's summary. */
  readonly counts = { messages: 0, cuts: 0, partitions: 0, heals: 0 };

  constructor(clock: ManualClock, random: () => number, o: Partial<NetworkOptions> = {}) {
    this.clock = clock;
    this.random = random;
    this.o = { minDelayMs: 0.05, maxDelayMs: 2, connectTimeoutMs: 1000, ...o };
  }

  later(ms: number, fn: () => void): void {
    this.clock.setTimer(fn, ms);
  }

  #delay(): number {
    return this.o.minDelayMs + this.random() * (this.o.maxDelayMs - this.o.minDelayMs);
  }

  reachable(a: string, b: string): boolean {
    return a === b || !this.#blocked.has(`${a}|${b}`);
  }

  /** The transport of one node (one power-on of it: `silence` ends it). */
  transport(node: string): Transport {
    return {
      connect: (host, port) => this.#connect(node, host, port),
      listen: async (host, port, accept) => {
        const p = port === 0 ? this.#nextPort++ : port;
        const key = `${host}:${p}`;
        if (this.#listeners.has(key)) throw new Error(`address in use: ${key}`);
        this.#listeners.set(key, { node, accept });
        const listener: Listener = {
          port: p,
          close: async () => {
            if (this.#listeners.get(key)?.node === node) this.#listeners.delete(key);
          },
        };
        return listener;
      },
    };
  }

  #connect(from: string, host: string, port: number): Dialing {
    const client = new MemoryEndpoint(this, from);
    this.#endpoints.add(client);
    client.remoteAddress = host;
    client.remotePort = port;
    const at = this.#delay();
    this.later(at, () => {
      if (client.closed || client.dead) return;
      const l = this.#listeners.get(`${host}:${port}`);
      if (!this.reachable(from, host)) {
        // No answer at all: the dial times out.
        this.later(this.o.connectTimeoutMs, () => client.reset());
        return;
      }
      if (!l) {
        client.reset(); // refused
        return;
      }
      const server = new MemoryEndpoint(this, l.node);
      this.#endpoints.add(server);
      server.remoteAddress = from;
      server.remotePort = 1;
      server.remote = client;
      client.remote = server;
      server.lastDue = this.clock.now();
      client.lastDue = this.clock.now();
      l.accept(server);
      this.later(this.#delay(), () => {
        if (!client.closed && !client.dead) client.emit('connect');
      });
    });
    return client;
  }

  deliver(from: MemoryEndpoint, chunk: Buffer): void {
    this.counts.messages++;
    const to = from.remote!;
    const due = Math.max(this.clock.now() + this.#delay(), from.lastDue);
    from.lastDue = due;
    this.#schedule(from, to, due, () => {
      if (!to.closed && !to.dead) to.emit('data', chunk);
    });
  }

  deliverClose(from: MemoryEndpoint, to: MemoryEndpoint): void {
    const due = Math.max(this.clock.now() + this.#delay(), from.lastDue);
    from.lastDue = due;
    this.#schedule(from, to, due, () => {
      if (!to.closed && !to.dead) {
        to.closed = true;
        to.emit('close');
      }
    });
  }

  /** Runs `fn` at `due` unless the pair is partitioned then: held until it heals (in order). */
  #schedule(from: MemoryEndpoint, to: MemoryEndpoint, due: number, fn: () => void): void {
    this.clock.setTimer(() => {
      if (from.dead || to.dead) return;
      if (!this.reachable(from.node, to.node) || this.#stalled.some((s) => s.from === from)) {
        this.#stalled.push({ from, fn });
        return;
      }
      fn();
    }, due - this.clock.now());
  }

  /** No traffic between the two sets until `heal`. */
  partition(a: string[], b: string[]): void {
    this.counts.partitions++;
    for (const x of a)
      for (const y of b) {
        this.#blocked.add(`${x}|${y}`);
        this.#blocked.add(`${y}|${x}`);
      }
  }

  get partitioned(): boolean {
    return this.#blocked.size > 0;
  }

  /** Every link works again; what was held is delivered in order. */
  heal(): void {
    if (this.#blocked.size === 0) return;
    this.counts.heals++;
    this.#blocked.clear();
    const held = this.#stalled;
    this.#stalled = [];
    for (const s of held) {
      const to = s.from.remote;
      if (!to) continue;
      const due = Math.max(this.clock.now() + this.#delay(), s.from.lastDue);
      s.from.lastDue = due;
      this.#schedule(s.from, to, due, s.fn);
    }
  }

  /** Resets every connection between two nodes (both ends see it close). */
  cut(a: string, b: string): void {
    this.counts.cuts++;
    for (const e of this.#endpoints) {
      if (e.closed || !e.remote) continue;
      if ((e.node === a && e.remote.node === b) || (e.node === b && e.remote.node === a)) e.reset();
    }
    this.#prune();
  }

  /** A node loses power: its connections go silent (its peers hear nothing), its listeners vanish. */
  silence(node: string): void {
    for (const e of this.#endpoints) if (e.node === node) e.dead = true;
    for (const [k, l] of this.#listeners) if (l.node === node) this.#listeners.delete(k);
    this.#stalled = this.#stalled.filter((s) => s.from.node !== node);
    this.#prune();
  }

  /**
   * A node is back: its peers' old connections to it are reset (their next segment meets a host
   * that no longer knows them).
   */
  rebooted(node: string): void {
    for (const e of this.#endpoints) if (e.remote?.node === node && e.remote.dead && !e.closed) e.reset();
    this.#prune();
  }

  #prune(): void {
    for (const e of this.#endpoints)
      if ((e.closed && (!e.remote || e.remote.closed)) || e.dead) this.#endpoints.delete(e);
  }
}
