/**
 * Wire frames of the replication protocol (pure). Layout, big-endian:
 *
 *   0  magic   u32  "CVR1"
 *   4  version u8   PROTOCOL_VERSION
 *   5  type    u8   message type (protocol.ts)
 *   6  flags   u16  0 (reserved)
 *   8  length  u32  payload bytes, at most MAX_PAYLOAD
 *  12  seq     u64  per direction, starting at 0, +1 per frame: a replayed or reordered frame is refused
 *  20  epoch   u64  sender's promotion epoch (fencing token)
 *  28  crc     u32  CRC-32 of header bytes 0..27 and the payload (catches corruption cheaply)
 *  32  payload
 *  ..  mac     32 bytes HMAC-SHA-256(key, header || payload), key per session and direction
 *
 * The decoder is incremental and never throws on input: bad bytes produce one error value, after
 * which the decoder refuses everything (the caller closes the connection).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const FRAME_MAGIC = 0x43565231; // "CVR1"
export const PROTOCOL_VERSION = 1;
export const HEADER_LENGTH = 32;
export const MAC_LENGTH = 32;
/** Largest payload: one 1 MiB write plus room for its fields. Anything larger is hostile. */
export const MAX_PAYLOAD = 1024 * 1024 + 4096;

export interface Frame {
  type: number;
  seq: number;
  epoch: number;
  payload: Buffer;
}

export type FrameError =
  | 'bad-magic'
  | 'bad-version'
  | 'bad-flags'
  | 'too-long'
  | 'bad-crc'
  | 'bad-mac'
  | 'bad-seq'
  | 'bad-epoch'
  | 'decoder-failed';

export type DecodeResult = { ok: true; frame: Frame } | { ok: false; error: FrameError; detail: string };

export function encodeFrame(key: Buffer, frame: Frame): Buffer {
  if (frame.payload.length > MAX_PAYLOAD)
    throw new RangeError(`frame payload ${frame.payload.length} > ${MAX_PAYLOAD}`);
  const header = Buffer.alloc(HEADER_LENGTH);
  header.writeUInt32BE(FRAME_MAGIC, 0);
  header.writeUInt8(PROTOCOL_VERSION, 4);
  header.writeUInt8(frame.type, 5);
  header.writeUInt16BE(0, 6);
  header.writeUInt32BE(frame.payload.length, 8);
  header.writeBigUInt64BE(BigInt(frame.seq), 12);
  header.writeBigUInt64BE(BigInt(frame.epoch), 20);
  header.writeUInt32BE(crc32(frame.payload, crc32(header.subarray(0, 28))), 28);
  const mac = createHmac('sha256', key).update(header).update(frame.payload).digest();
  return Buffer.concat([header, frame.payload, mac]);
}

/**
 * Incremental decoder for one direction of one connection. `setKey` switches the MAC key when the
 * handshake derives the session key (frames before that are authenticated only by the handshake
 * proofs themselves).
 */
export class FrameDecoder {
  #key: Buffer;
  #expectedSeq = 0;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #failed = false;

  constructor(key: Buffer) {
    this.#key = key;
  }

  setKey(key: Buffer): void {
    this.#key = key;
  }

  /** Authenticated frames continue the sequence numbers of the handshake frames before them. */
  expectSeq(seq: number): void {
    this.#expectedSeq = seq;
  }

  get failed(): boolean {
    return this.#failed;
  }

  /** Feeds bytes; returns every complete frame, stopping at (and including) the first error. */
  push(chunk: Buffer, maxFrames = Number.POSITIVE_INFINITY): DecodeResult[] {
    const out: DecodeResult[] = [];
    if (this.#failed) return [{ ok: false, error: 'decoder-failed', detail: 'connection already failed' }];
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    for (;;) {
      if (out.length >= maxFrames) return out;
      if (this.#buffered < HEADER_LENGTH) return out;
      const head = this.#peek(HEADER_LENGTH);
      const bad = checkHeader(head);
      if (bad) return this.#fail(out, bad.error, bad.detail);
      const length = head.readUInt32BE(8);
      const total = HEADER_LENGTH + length + MAC_LENGTH;
      if (this.#buffered < total) return out;
      const whole = this.#take(total);
      const r = this.#verify(whole, length);
      out.push(r);
      if (!r.ok) {
        this.#failed = true;
        return out;
      }
    }
  }

  #verify(whole: Buffer, length: number): DecodeResult {
    const header = whole.subarray(0, HEADER_LENGTH);
    const payload = whole.subarray(HEADER_LENGTH, HEADER_LENGTH + length);
    const mac = whole.subarray(HEADER_LENGTH + length);
    const crc = crc32(payload, crc32(header.subarray(0, 28)));
    if (crc !== header.readUInt32BE(28))
      return { ok: false, error: 'bad-crc', detail: 'frame checksum mismatch' };
    const expected = createHmac('sha256', this.#key).update(header).update(payload).digest();
    if (!timingSafeEqual(expected, mac)) return { ok: false, error: 'bad-mac', detail: 'frame MAC mismatch' };
    const seq = header.readBigUInt64BE(12);
    if (seq !== BigInt(this.#expectedSeq)) {
      return {
        ok: false,
        error: 'bad-seq',
        detail: `sequence ${seq}, expected ${this.#expectedSeq} (replay?)`,
      };
    }
    const epoch = header.readBigUInt64BE(20);
    if (epoch > BigInt(Number.MAX_SAFE_INTEGER))
      return { ok: false, error: 'bad-epoch', detail: 'epoch out of range' };
    this.#expectedSeq++;
    return {
      ok: true,
      frame: {
        type: header.readUInt8(5),
        seq: Number(seq),
        epoch: Number(epoch),
        payload: Buffer.from(payload),
      },
    };
  }

  /** Hands back the bytes not yet decoded (after a handshake, they belong to the next decoder). */
  takeRemaining(): Buffer {
    const rest = Buffer.concat(this.#chunks);
    this.#chunks = [];
    this.#buffered = 0;
    return rest;
  }

  #fail(out: DecodeResult[], error: FrameError, detail: string): DecodeResult[] {
    this.#failed = true;
    this.#chunks = [];
    this.#buffered = 0;
    out.push({ ok: false, error, detail });
    return out;
  }

  #peek(n: number): Buffer {
    const first = this.#chunks[0];
    if (first && first.length >= n) return first.subarray(0, n);
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [all];
    return all.subarray(0, n);
  }

  #take(n: number): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
    const taken = all.subarray(0, n);
    const rest = all.subarray(n);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered -= n;
    return taken;
  }
}

function checkHeader(head: Buffer): { error: FrameError; detail: string } | undefined {
  if (head.readUInt32BE(0) !== FRAME_MAGIC)
    return { error: 'bad-magic', detail: 'not a cvserver replication frame' };
  const version = head.readUInt8(4);
  if (version !== PROTOCOL_VERSION)
    return { error: 'bad-version', detail: `protocol version ${version}, expected ${PROTOCOL_VERSION}` };
  if (head.readUInt16BE(6) !== 0) return { error: 'bad-flags', detail: 'reserved flags set' };
  const length = head.readUInt32BE(8);
  if (length > MAX_PAYLOAD) return { error: 'too-long', detail: `payload length ${length} > ${MAX_PAYLOAD}` };
  return undefined;
}
