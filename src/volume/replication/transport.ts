/**
 * How replication connections reach the network: the TCP one in production (tcp-transport.ts), a
 * simulated network in the deterministic simulation (src/sim/replication/memory-network.ts). A
 * Connection needs only this much of a socket: ordered bytes both ways, corked writes, close.
 */

/** One end of a byte stream that delivers in order (it may be cut, never reordered). */
export interface Endpoint {
  /** Queues bytes; false when the caller should slow down (it never has to). */
  write(chunk: Buffer): boolean;
  /** Writes between cork and uncork leave together (one writev on TCP). */
  cork(): void;
  uncork(): void;
  /** Closes after what was written has gone out; `done` runs once it has. */
  end(done?: () => void): void;
  /** Closes now; 'close' follows. */
  destroy(): void;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  off(event: 'data', listener: (chunk: Buffer) => void): unknown;
  off(event: 'close', listener: () => void): unknown;
  off(event: 'error', listener: (err: Error) => void): unknown;
  /** For logs: who is at the other end, where known. */
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
}

/** A connection being dialled: `connected` once it is up, 'close' if it fails. */
export interface Dialing extends Endpoint {
  once(event: 'connect', listener: () => void): unknown;
  once(event: 'close', listener: () => void): unknown;
}

export interface Listener {
  /** The port it listens on (the one chosen when asked for 0). */
  readonly port: number;
  close(): Promise<void>;
}

export interface Transport {
  connect(host: string, port: number): Dialing;
  listen(host: string, port: number, onAccept: (endpoint: Endpoint) => void): Promise<Listener>;
}
