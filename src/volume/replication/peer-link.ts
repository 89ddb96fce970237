/**
 * The primary's link to one peer: connects to the peer's replica server, authenticates, exchanges
 * STATE, then carries pipelined requests (each with an id, answered by an ack/reply with that id).
 * Reconnects with exponential backoff unless stopped or parked (split-brain, unrelated data). When the
 * connection drops, every pending request fails with `PeerGone` (the caller marks its bitmap).
 */
import { type Clock, systemClock, type TimerHandle } from '../../lib/clock.ts';
import { type Connection, type ConnectionLog, clientHandshake, HandshakeRefused } from './connection.ts';
import type { VersionRange } from './frame.ts';
import { type DiskStateSource, stateSource } from './peer-report.ts';
import { AckStatus, type AckStatusCode, type Message, type PeerState } from './protocol.ts';
import type { ConnectionState } from './role.ts';
import { tcpTransport } from './tcp-transport.ts';
import type { Dialing, Transport } from './transport.ts';
import { ACTIVITY_SINCE, localVersions } from './version.ts';

export class PeerGone extends Error {
  constructor(peer: string, why: string) {
    super(`peer ${peer} gone: ${why}`);
    this.name = 'PeerGone';
  }
}

export interface PeerAddress {
  /** Node name of the peer (as it presents itself in the handshake). */
  node: string;
  host: string;
  port: number;
  /** A diskless tiebreaker: votes for quorum, receives no data. */
  tiebreaker?: boolean;
}

export interface PeerLinkOptions {
  node: string;
  volumeUuid: string;
  secret: Buffer;
  peer: PeerAddress;
  log: ConnectionLog;
  /** Our STATE, sent after authentication. */
  localState: () => PeerState;
  /** Called once per connection with the peer's STATE; the owner decides what happens next. */
  onConnected: (link: PeerLink, peerState: PeerState) => void;
  onDisconnected: (link: PeerLink, reason: string) => void;
  /** A later STATE on the same connection (the peer's answer, or a change it pushed). */
  onStateChanged?: (link: PeerLink, peerState: PeerState) => void;
  /** A connection attempt failed or a connection was lost (`failures` grew). */
  onFailure?: (link: PeerLink) => void;
  now?: () => number;
  /** Reconnect backoff and the connection's timeouts (default: the system's). */
  clock?: Clock;
  /** How to reach the peer (default: TCP). */
  transport?: Transport;
  /** The protocol versions this side speaks (default: `localVersions()`, version.ts). */
  versions?: VersionRange;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

type Reply = Extract<Message, { type: 'ack' | 'digestReply' | 'readReply' }>;

export class PeerLink {
  readonly o: PeerLinkOptions;
  state: ConnectionState = 'StandAlone';
  /** Failed connection attempts and lost connections so far (promotion waits for one per peer). */
  failures = 0;
  peerState: PeerState | undefined;
  /** How peerState was learnt, and when (ms): a report can be told fresh from stale. */
  peerStateSource: DiskStateSource = 'none';
  peerStateAt: number;
  lastError = '';
  /** The protocol version of the live connection (negotiated in its handshake), else undefined. */
  get protocolVersion(): number | undefined {
    return this.#conn?.version;
  }
  readonly #versions: VersionRange;
  #conn: Connection | undefined;
  #nextId = 1;
  #pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  #stopped = true;
  #parked = false;
  #timer: TimerHandle | undefined;
  /** The socket of the latest connection attempt. */
  #dialing: Dialing | undefined;
  readonly #clock: Clock;
  #backoff: number;
  /** Totals over all connections (bytes on the wire, frames included). */
  bytesSentTotal = 0;
  #bytesSentBefore = 0;

  constructor(o: PeerLinkOptions) {
    this.o = o;
    this.#clock = o.clock ?? systemClock;
    this.#versions = o.versions ?? localVersions();
    this.#backoff = o.minBackoffMs ?? 100;
    this.peerStateAt = this.#now();
  }

  #now(): number {
    return this.o.now ? this.o.now() : this.#clock.now();
  }

  #learn(st: PeerState | undefined, source: DiskStateSource): void {
    this.peerState = st;
    this.peerStateSource = source;
    this.peerStateAt = this.#now();
  }

  get node(): string {
    return this.o.peer.node;
  }

  get bytesSent(): number {
    return this.#bytesSentBefore + (this.#conn?.bytesSent ?? 0);
  }

  start(): void {
    this.#stopped = false;
    this.#parked = false;
    if (!this.#conn && !this.#timer) this.#dial();
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = undefined;
    this.#conn?.close('link stopped');
    this.state = 'StandAlone';
  }

  /** Closes the connection and does not reconnect until `start()` (split-brain, unrelated, refused). */
  park(state: ConnectionState, reason: string): void {
    this.#parked = true;
    this.lastError = reason;
    this.#conn?.send({ type: 'error', message: reason });
    this.#conn?.close(reason);
    this.state = state;
  }

  /** A fresh answer from the peer within `ms` (Connection.answered); false when not connected. */
  answered(ms: number): Promise<boolean> {
    return this.#conn?.answered(ms) ?? Promise.resolve(false);
  }

  /** Drop the connection now (tests, admin); it reconnects with backoff. */
  drop(reason: string): void {
    this.#conn?.close(reason);
  }

  set epoch(e: number) {
    if (this.#conn) this.#conn.epoch = e;
    this.#epoch = e;
  }
  #epoch = 0;

  send(m: Message): boolean {
    return this.#conn?.send(m) ?? false;
  }

  write(offset: number, data: Buffer, resync = false): Promise<AckStatusCode> {
    const reply = this.#request((id) => ({ type: 'write', id, offset, data, resync }));
    this.#conn?.flushNow();
    return reply.then((r) => (r.type === 'ack' ? r.status : 1));
  }

  flush(): Promise<AckStatusCode> {
    const reply = this.#request((id) => ({ type: 'flush', id }));
    // As for a write: the local fdatasync that follows may run inline and would hold the FLUSH
    // back until it ends, putting the two fdatasyncs in series instead of in parallel.
    this.#conn?.flushNow();
    return reply.then((r) => (r.type === 'ack' ? r.status : 1));
  }

  /**
   * Ships the primary's activity-log ranges (reconciliation.ts); resolves with the peer's ack once
   * they are durable there. A peer of before protocol version 4 keeps no such record: ok at once.
   */
  activity(ranges: Array<[number, number]>): Promise<AckStatusCode> {
    if ((this.protocolVersion ?? 0) < ACTIVITY_SINCE) return Promise.resolve(AckStatus.ok);
    return this.#request((id) => ({ type: 'activity', id, ranges })).then((r) =>
      r.type === 'ack' ? r.status : AckStatus.ioError,
    );
  }

  digests(offset: number, length: number, chunk: number): Promise<Buffer | undefined> {
    return this.#request((id) => ({ type: 'digestRequest', id, offset, length, chunk })).then((r) =>
      r.type === 'digestReply' && r.status === 0 ? r.digests : undefined,
    );
  }

  read(offset: number, length: number): Promise<Buffer | undefined> {
    return this.#request((id) => ({ type: 'readRequest', id, offset, length })).then((r) =>
      r.type === 'readReply' && r.status === 0 ? r.data : undefined,
    );
  }

  #request(make: (id: number) => Message): Promise<Reply> {
    const conn = this.#conn;
    if (!conn || conn.closed) return Promise.reject(new PeerGone(this.node, 'not connected'));
    const id = this.#nextId;
    this.#nextId = (this.#nextId % 0xfffffffe) + 1;
    return new Promise<Reply>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      conn.send(make(id));
    });
  }

  #dial(): void {
    this.#timer = undefined;
    if (this.#stopped || this.#parked) return;
    this.state = 'Connecting';
    const socket = (this.o.transport ?? tcpTransport).connect(this.o.peer.host, this.o.peer.port);
    this.#dialing = socket;
    socket.on('error', () => undefined);
    socket.once('connect', () => {
      if (this.#dialing !== socket) {
        socket.destroy();
        return;
      }
      this.state = 'Handshaking';
      clientHandshake(socket, {
        node: this.o.node,
        volumeUuid: this.o.volumeUuid,
        secret: this.o.secret,
        versions: this.#versions,
        clock: this.#clock,
      }).then(
        (conn) => (this.#dialing === socket ? this.#established(conn) : conn.close('superseded')),
        (err: Error) => {
          if (this.#dialing !== socket) return;
          // Once per reason: the link retries every few seconds until one side is upgraded.
          if (err instanceof HandshakeRefused && err.message !== this.lastError)
            this.o.log.warn({ peer: this.node, reason: err.message }, 'replication handshake refused');
          this.lastError = err.message;
          this.state = /authentication/.test(err.message) ? 'AuthFailed' : 'Connecting';
          this.#retry();
        },
      );
    });
    socket.once('close', () => {
      // Only this attempt's failure: the socket of an earlier, stopped attempt closes later, while a
      // new one may be connecting (counted, it let a promotion go ahead without the peer's answer).
      if (this.#dialing === socket && this.state === 'Connecting') this.#retry();
    });
  }

  #retry(): void {
    this.failures++;
    this.o.onFailure?.(this);
    if (this.#stopped || this.#parked || this.#timer) return;
    const delay = this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, this.o.maxBackoffMs ?? 5000);
    this.#timer = this.#clock.setTimer(() => this.#dial(), delay);
  }

  #established(conn: Connection): void {
    if (this.#stopped || this.#parked) {
      conn.close('link stopped');
      return;
    }
    this.#conn = conn;
    conn.epoch = this.#epoch;
    let introduced = false;
    conn.onClose((reason) => {
      if (conn.peerError !== undefined) this.lastError = conn.peerError;
      this.#bytesSentBefore += conn.bytesSent;
      this.#conn = undefined;
      for (const [, p] of this.#pending) p.reject(new PeerGone(this.node, reason));
      this.#pending.clear();
      if (!this.#parked) this.state = this.#stopped ? 'StandAlone' : 'Connecting';
      this.#learn(undefined, 'none');
      if (introduced) this.o.onDisconnected(this, reason);
      this.o.log.info({ peer: this.node, reason }, 'peer link down');
      this.#retry();
    });
    conn.onMessage((m) => {
      switch (m.type) {
        case 'state':
          if (!introduced) {
            introduced = true;
            this.#backoff = this.o.minBackoffMs ?? 100;
            this.#learn(m.state, stateSource(true, m.state.sent));
            this.state = 'Connected';
            this.o.onConnected(this, m.state);
          } else {
            this.#learn(m.state, stateSource(false, m.state.sent));
            this.o.onStateChanged?.(this, m.state);
          }
          return;
        case 'ack':
        case 'digestReply':
        case 'readReply': {
          const p = this.#pending.get(m.id);
          if (!p) {
            conn.close(`bad reply: unknown request id ${m.id}`);
            return;
          }
          this.#pending.delete(m.id);
          p.resolve(m);
          return;
        }
        default:
          conn.close(`bad message: unexpected ${m.type}`);
      }
    });
    conn.send({ type: 'state', state: this.o.localState() });
  }
}
