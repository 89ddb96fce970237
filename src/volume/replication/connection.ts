/**
 * One authenticated replication connection over a byte stream (transport.ts, TCP in production): the handshake (auth.ts), then framed
 * messages (frame.ts, protocol.ts) in both directions. Any malformed, oversized, unauthenticated or
 * replayed input closes the connection with a logged reason; it never throws into the caller.
 *
 * Sending never copies a payload: a frame goes out as header, payload parts and MAC, written
 * corked, and everything sent within one tick (many acks, say) leaves in one writev.
 * PING (answered), PONG and ERROR (the peer's reason, then close) are handled here, for both sides;
 * the owner sees only the other messages.
 */
import { randomBytes } from 'node:crypto';
import { type Clock, systemClock, type TimerHandle } from '../../lib/clock.ts';
import {
  clientProof,
  HANDSHAKE_KEY,
  NONCE_LENGTH,
  proofMatches,
  serverProof,
  sessionKeys,
  type Transcript,
} from './auth.ts';
import {
  encodeFrame,
  encodeFrameParts,
  FrameDecoder,
  MAX_PAYLOAD,
  type MacKey,
  macKey,
  type VersionRange,
} from './frame.ts';
import { type FramePool, POOLED_FRAME_MIN } from './frame-pool.ts';
import { decodeMessage, encodeMessage, encodeMessageParts, type Message } from './protocol.ts';
import type { Endpoint } from './transport.ts';
import { forVersion, helloVersions, localVersions, negotiate, rangeText } from './version.ts';

export interface ConnectionLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export const HANDSHAKE_TIMEOUT_MS = 5000;
/**
 * Liveness: a connection that received nothing for this long is dead (a cut link sends no RST, and
 * TCP would retry for many minutes). Pings go out when idle, so a healthy peer is never silent.
 */
export const PEER_TIMEOUT_MS = Number(process.env.CVSERVER_PEER_TIMEOUT_MS ?? 6000);
const PING_INTERVAL_MS = Math.max(50, Math.floor(PEER_TIMEOUT_MS / 4));

export class Connection {
  readonly socket: Endpoint;
  readonly peerNode: string;
  /** The protocol version negotiated in the handshake: every frame carries it (version.ts). */
  readonly version: number;
  #sendKey: MacKey;
  #sendSeq: number;
  #corked = false;
  #decoder: FrameDecoder;
  #closed = false;
  #onMessage: MessageHandler | undefined;
  #onClose: Array<(reason: string) => void> = [];
  #pendingMessages: Array<[Message, number, () => void]> = [];
  #pool: FramePool | undefined;
  /** Bytes of payload sent and received (the resync test counts what travels). */
  bytesSent = 0;
  bytesReceived = 0;
  /** Epoch stamped on outgoing frames. */
  epoch = 0;
  /** The reason the peer sent in an ERROR message before closing, if it did. */
  peerError: string | undefined;
  readonly #clock: Clock;
  #lastInput: number;
  #liveness: TimerHandle | undefined;
  /** Who waits for the next input (see answered()). */
  #inputWaiters: Array<(heard: boolean) => void> = [];

  constructor(
    socket: Endpoint,
    peerNode: string,
    sendKey: Buffer,
    sendSeq: number,
    decoder: FrameDecoder,
    leftover: Buffer[],
    version: number,
    pool?: FramePool,
    clock: Clock = systemClock,
  ) {
    this.#pool = pool;
    this.#clock = clock;
    this.#lastInput = clock.now();
    this.socket = socket;
    this.peerNode = peerNode;
    this.version = version;
    this.#sendKey = macKey(sendKey);
    this.#sendSeq = sendSeq;
    this.#decoder = decoder;
    socket.on('data', (chunk: Buffer) => this.#input(chunk));
    socket.on('close', () => this.close('socket closed'));
    socket.on('error', (err) => this.close(`socket error: ${err.message}`));
    for (const chunk of leftover) this.#input(chunk);
    if (!this.#closed) this.#armLiveness();
  }

  /** The next liveness check (unref'd: a connection alone does not keep a process running). */
  #armLiveness(): void {
    this.#liveness = this.#clock.setTimer(() => this.#checkLiveness(), PING_INTERVAL_MS);
    this.#liveness.unref?.();
  }

  #checkLiveness(): void {
    if (this.#closed) return;
    const silent = this.#clock.now() - this.#lastInput;
    if (silent >= PEER_TIMEOUT_MS) this.close(`peer timeout: nothing received for ${silent} ms`);
    else {
      if (silent >= PING_INTERVAL_MS) this.send({ type: 'ping' });
      this.#armLiveness();
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The handler gets each message with the frame's epoch and a `release` to call once the message's
   * buffers are no longer used (a write's data after it reached the disk); not calling it is safe.
   */
  onMessage(handler: MessageHandler): void {
    this.#onMessage = handler;
    const queued = this.#pendingMessages;
    this.#pendingMessages = [];
    for (const [m, e, release] of queued) if (!this.#closed) handler(m, e, release);
  }

  onClose(handler: (reason: string) => void): void {
    if (this.#closed) handler('already closed');
    else this.#onClose.push(handler);
  }

  /** Sends one message; false when the connection is closed (the caller treats the peer as gone). */
  send(m: Message): boolean {
    if (this.#closed) return false;
    const { type, parts } = encodeMessageParts(forVersion(m, this.version));
    const frame = encodeFrameParts(this.#sendKey, {
      version: this.version,
      type,
      seq: this.#sendSeq++,
      epoch: this.epoch,
      parts,
    });
    if (!this.#corked) {
      this.#corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        this.socket.uncork();
      });
    }
    let ok = true;
    for (const b of frame) {
      this.bytesSent += b.length;
      ok = this.socket.write(b);
    }
    return ok;
  }

  /**
   * Sends what this tick corked now. The primary calls it after a WRITE: the local write that
   * follows may run synchronously (LocalDevice inline) and would otherwise hold the frame back.
   */
  flushNow(): void {
    if (!this.#corked || this.#closed) return;
    this.#corked = false;
    this.socket.uncork();
  }

  close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#liveness?.cancel();
    // What was sent this tick (an ERROR with the reason, say) goes out before the socket closes.
    if (this.#corked) {
      this.#corked = false;
      this.socket.uncork();
    }
    this.socket.destroy();
    for (const w of this.#inputWaiters.splice(0)) w(false);
    for (const h of this.#onClose.splice(0)) h(reason);
  }

  /**
   * Pings the peer now and resolves true once anything arrives from it after this call, false if
   * nothing does within `ms` or the connection closes: a vote counted from a link not timed out yet
   * may be a dead peer's (a quorum check, as DRBD pings before a new current UUID).
   */
  answered(ms: number): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      let done = false;
      const finish = (heard: boolean) => {
        if (done) return;
        done = true;
        timer.cancel();
        resolve(heard);
      };
      const timer = this.#clock.setTimer(() => finish(false), ms);
      timer.unref?.();
      this.#inputWaiters.push(finish);
      this.send({ type: 'ping' });
    });
  }

  #input(chunk: Buffer): void {
    if (this.#closed) return;
    this.#lastInput = this.#clock.now();
    for (const w of this.#inputWaiters.splice(0)) w(true);
    this.bytesReceived += chunk.length;
    for (const r of this.#decoder.push(chunk)) {
      if (!r.ok) {
        this.close(`bad frame: ${r.error}: ${r.detail}`);
        return;
      }
      const d = decodeMessage(r.frame.type, r.frame.payload);
      if (!d.ok) {
        this.close(`bad message: ${d.error}`);
        return;
      }
      if (d.message.type === 'ping') {
        this.send({ type: 'pong' });
        continue;
      }
      if (d.message.type === 'pong') continue;
      if (d.message.type === 'error') {
        this.peerError = d.message.message;
        this.close(`peer error: ${d.message.message}`);
        return;
      }
      const slot = r.frame.slot;
      const pool = this.#pool;
      const release = slot && pool ? () => pool.release(slot) : noop;
      if (this.#onMessage) this.#onMessage(d.message, r.frame.epoch, release);
      else this.#pendingMessages.push([d.message, r.frame.epoch, release]);
      if (this.#closed) return;
    }
  }
}

export interface HandshakeOptions {
  node: string;
  volumeUuid: string;
  secret: Buffer;
  timeoutMs?: number;
  /** Receive buffers for large frames (the replica server passes one; see frame-pool.ts). */
  pool?: FramePool;
  /** The protocol versions this side speaks (default: `localVersions()`, version.ts). */
  versions?: VersionRange;
  /** Timeouts and liveness (default: the system's). */
  clock?: Clock;
}

/**
 * A handshake refused with a reason worth showing (no common protocol version): said by the server in
 * an ERROR, or found by the client in the server's choice.
 */
export class HandshakeRefused extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'HandshakeRefused';
  }
}

export type MessageHandler = (m: Message, epoch: number, release: () => void) => void;
const noop = () => undefined;

const HANDSHAKE_MAC_KEY = macKey(HANDSHAKE_KEY);
/** HELLO, CHALLENGE and AUTH are a few hundred bytes each. */
const HANDSHAKE_MAX_PAYLOAD = 4096;
/**
 * Handshake frames may carry any version byte: the header's layout up to its CRC is the same in every
 * version, and which version the pair speaks is what the handshake decides.
 */
const ANY_VERSION: VersionRange = { min: 1, max: 255 };

/** A handshake message and the version byte of its frame. */
interface Received {
  message: Message;
  version: number;
}

/** Reads handshake frames one at a time (before the session key exists). */
function handshakeReader(socket: Endpoint, timeoutMs: number, frames: number, clock: Clock) {
  // Handshake messages are a few hundred bytes: an unauthenticated peer gets no bigger buffer.
  const decoder = new FrameDecoder(
    HANDSHAKE_MAC_KEY,
    undefined,
    undefined,
    HANDSHAKE_MAX_PAYLOAD,
    ANY_VERSION,
  );
  const queue: Received[] = [];
  const leftover: Buffer[] = [];
  let waiter: { resolve: (m: Received) => void; reject: (e: Error) => void } | undefined;
  let failure: Error | undefined;
  let done = false;
  let received = 0;
  const fail = (e: Error) => {
    failure ??= e;
    waiter?.reject(failure);
    waiter = undefined;
  };
  const onData = (chunk: Buffer) => {
    if (done || received === frames) {
      leftover.push(chunk);
      return;
    }
    for (const r of decoder.push(chunk, frames - received)) {
      if (!r.ok) return fail(new Error(`bad handshake frame: ${r.error}`));
      const d = decodeMessage(r.frame.type, r.frame.payload);
      if (!d.ok) return fail(new Error(`bad handshake message: ${d.error}`));
      received++;
      queue.push({ message: d.message, version: r.frame.version ?? 0 });
    }
    // Bytes after the last handshake frame belong to the authenticated stream.
    if (received === frames) {
      const rest = decoder.takeRemaining();
      if (rest.length > 0) leftover.push(rest);
    }
    if (waiter && queue.length > 0) {
      const w = waiter;
      waiter = undefined;
      w.resolve(queue.shift()!);
    }
  };
  const onEnd = () => fail(new Error('connection closed during handshake'));
  const onError = (e: Error) => fail(new Error(`socket error during handshake: ${e.message}`));
  socket.on('data', onData);
  socket.on('close', onEnd);
  socket.on('error', onError);
  const timer = clock.setTimer(() => fail(new Error('handshake timed out')), timeoutMs);
  let seq = 0;
  return {
    decoder,
    next(): Promise<Received> {
      if (failure) return Promise.reject(failure);
      const m = queue.shift();
      if (m) return Promise.resolve(m);
      return new Promise((resolve, reject) => {
        waiter = { resolve, reject };
      });
    },
    send(m: Message, version: number): void {
      const { type, payload } = encodeMessage(m);
      socket.write(encodeFrame(HANDSHAKE_MAC_KEY, { version, type, seq: seq++, epoch: 0, payload }));
    },
    get seq() {
      return seq;
    },
    /** Stops reading handshake frames; bytes already buffered in the decoder are lost only on failure. */
    finish(): Buffer[] {
      done = true;
      timer.cancel();
      socket.off('data', onData);
      socket.off('close', onEnd);
      socket.off('error', onError);
      return leftover;
    },
  };
}

/**
 * Client side: HELLO, verify the server's proof, send ours. Rejects (and destroys the socket) on any
 * failure. Authenticated frames follow immediately, so the server must not send before AUTH (it
 * does not: it waits for the client's STATE).
 */
export async function clientHandshake(socket: Endpoint, o: HandshakeOptions): Promise<Connection> {
  const clock = o.clock ?? systemClock;
  const r = handshakeReader(socket, o.timeoutMs ?? HANDSHAKE_TIMEOUT_MS, 1, clock);
  try {
    const local = o.versions ?? localVersions();
    const clientNonce = randomBytes(NONCE_LENGTH);
    r.send(
      { type: 'hello', node: o.node, volume: o.volumeUuid, nonce: clientNonce, versions: local },
      local.max,
    );
    const { message: ch, version: frameVersion } = await r.next();
    if (ch.type === 'error') throw new HandshakeRefused(`refused by the server: ${ch.message}`);
    if (ch.type !== 'challenge') throw new Error(`expected challenge, got ${ch.type}`);
    // The server's choice (without one, a server of before the negotiation: its frame's version).
    const version = ch.version ?? frameVersion;
    if (version < local.min || version > local.max)
      throw new HandshakeRefused(
        `server ${ch.node} chose replication protocol version ${version}; ${o.node} speaks ${rangeText(local)}`,
      );
    const t: Transcript = {
      clientNode: o.node,
      serverNode: ch.node,
      volumeUuid: o.volumeUuid,
      clientNonce,
      serverNonce: ch.nonce,
      versions: `${rangeText(local)} ${version}`,
    };
    if (!proofMatches(serverProof(o.secret, t), ch.proof))
      throw new Error('server failed authentication (wrong secret?)');
    r.send({ type: 'auth', proof: clientProof(o.secret, t) }, version);
    const keys = sessionKeys(o.secret, t);
    const sendSeq = r.seq;
    const leftover = r.finish();
    // The server's authenticated frames continue its sequence after its one handshake frame.
    const decoder = new FrameDecoder(keys.serverToClient, o.pool, POOLED_FRAME_MIN, MAX_PAYLOAD, {
      min: version,
      max: version,
    });
    skipSeq(decoder, 1);
    return new Connection(
      socket,
      ch.node,
      keys.clientToServer,
      sendSeq,
      decoder,
      leftover,
      version,
      o.pool,
      clock,
    );
  } catch (err) {
    r.finish();
    socket.destroy();
    throw err;
  }
}

export async function serverHandshake(socket: Endpoint, o: HandshakeOptions): Promise<Connection> {
  const clock = o.clock ?? systemClock;
  const r = handshakeReader(socket, o.timeoutMs ?? HANDSHAKE_TIMEOUT_MS, 2, clock);
  try {
    const { message: hello, version: frameVersion } = await r.next();
    if (hello.type !== 'hello') throw new Error(`expected hello, got ${hello.type}`);
    if (hello.volume !== o.volumeUuid)
      throw new Error(`peer ${hello.node} asks for another volume (${hello.volume})`);
    const local = o.versions ?? localVersions();
    const peer = helloVersions(frameVersion, hello.versions);
    const n = negotiate(local, peer, { local: o.node, peer: hello.node });
    if (!n.ok) {
      // Said in the client's own version, so that it can read why (unauthenticated: a reason only).
      r.send({ type: 'error', message: n.reason }, peer.max);
      await new Promise<void>((resolve) => {
        socket.end(resolve);
        clock.setTimer(resolve, 1000).unref?.();
      });
      throw new HandshakeRefused(n.reason);
    }
    const serverNonce = randomBytes(NONCE_LENGTH);
    const t: Transcript = {
      clientNode: hello.node,
      serverNode: o.node,
      volumeUuid: o.volumeUuid,
      clientNonce: hello.nonce,
      serverNonce,
      ...(hello.versions ? { versions: `${rangeText(hello.versions)} ${n.version}` } : {}),
    };
    r.send(
      {
        type: 'challenge',
        node: o.node,
        nonce: serverNonce,
        proof: serverProof(o.secret, t),
        // A client of before the negotiation would refuse the field: it learns the version from the frame.
        ...(hello.versions ? { version: n.version } : {}),
      },
      n.version,
    );
    const { message: auth } = await r.next();
    if (auth.type !== 'auth') throw new Error(`expected auth, got ${auth.type}`);
    if (!proofMatches(clientProof(o.secret, t), auth.proof))
      throw new Error(`peer ${hello.node} failed authentication`);
    const keys = sessionKeys(o.secret, t);
    const sendSeq = r.seq;
    const leftover = r.finish();
    const decoder = new FrameDecoder(keys.clientToServer, o.pool, POOLED_FRAME_MIN, MAX_PAYLOAD, {
      min: n.version,
      max: n.version,
    });
    skipSeq(decoder, 2);
    return new Connection(
      socket,
      hello.node,
      keys.serverToClient,
      sendSeq,
      decoder,
      leftover,
      n.version,
      o.pool,
      clock,
    );
  } catch (err) {
    r.finish();
    socket.destroy();
    throw err;
  }
}

function skipSeq(decoder: FrameDecoder, n: number): void {
  decoder.expectSeq(n);
}
