/**
 * Messages of the replication protocol and their payload codecs (pure). Control messages are small
 * JSON objects validated by schema; the data path (writes, acks, flushes, digests) is binary.
 * `decodeMessage` never throws: hostile payloads give an error value.
 */
import { z } from 'zod';
import { NONCE_LENGTH } from './auth.ts';
import { MAX_PAYLOAD } from './frame.ts';
import { MAX_RANGES } from './reconciliation.ts';

export const MessageType = {
  hello: 1,
  challenge: 2,
  auth: 3,
  state: 4,
  write: 10,
  ack: 11,
  flush: 12,
  activity: 13,
  generation: 14,
  digestRequest: 20,
  digestReply: 21,
  readRequest: 22,
  readReply: 23,
  ping: 30,
  pong: 31,
  error: 40,
} as const;

/** Status carried by an ack: why a replica refused a request. */
export const AckStatus = { ok: 0, ioError: 1, staleEpoch: 2, notSecondary: 3, outOfRange: 4 } as const;
export type AckStatusCode = (typeof AckStatus)[keyof typeof AckStatus];

const genId = z.string().regex(/^[0-9a-f]{1,16}$/);
const byteRanges = z
  .array(
    z.tuple([
      z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
      z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    ]),
  )
  .max(MAX_RANGES);
const generationSchema = z.strictObject({ current: genId, bitmap: genId, history: z.array(genId).max(16) });
export const peerStateSchema = z.strictObject({
  node: z.string().min(1).max(128),
  role: z.enum(['Primary', 'Secondary']),
  diskState: z.enum(['UpToDate', 'Outdated', 'Inconsistent', 'Diskless']),
  generation: generationSchema,
  crashedPrimary: z.boolean(),
  epoch: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  /** Blocks changed since the sides parted (for discard-least-changes / zero-changes). */
  changedBlocks: z.number().int().nonnegative(),
  promotedAt: z.number().int().nonnegative(),
  /**
   * This replica acknowledges a WRITE only once it is on stable storage (O_DSYNC): the primary's
   * FSYNC then needs no FLUSH round trip to it.
   */
  durableWrites: z.boolean().optional(),
  /**
   * A replica that crashed as primary: the extents its activity log held ([offset, length]), which
   * may hold writes nobody acknowledged. The new primary resyncs them to it (instead of everything).
   */
  crashRanges: z
    .array(
      z.tuple([
        z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
        z
          .number()
          .int()
          .positive()
          .max(2 ** 32),
      ]),
    )
    .max(256)
    .optional(),
  /**
   * A secondary's record of its primaries' activity-log ranges (reconciliation.ts; version 4): the
   * primary `from` at `epoch` shipped `current`; `carried` are earlier primaries' not yet resynced
   * here. A new primary resyncs them from itself. Absent when empty.
   */
  activity: z
    .strictObject({
      from: z.string().min(1).max(128),
      epoch: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
      current: byteRanges,
      carried: byteRanges,
    })
    .optional(),
  /**
   * Why a STATE after a connection's first was sent: `reply` answers the other side's STATE (sent
   * once what it decided there is durable), `update` is pushed because the sender's durable state
   * changed (disk state, generation, epoch, role). Absent on the first STATE of a connection.
   */
  sent: z.enum(['reply', 'update']).optional(),
  /**
   * The generation of the newest primary this replica heard from (version 5): what it was told it
   * holds, or at least that this data exists. A replica older than it, or diverged from it, missed
   * acknowledged writes and may not be promoted (handshake.ts, promotionBlockedBy). Absent: none yet.
   */
  witnessed: generationSchema.optional(),
  /**
   * The generation in which this replica, as primary, last acknowledged a write or a flush (version
   * 5): what it wrote in any later generation of its own was never acknowledged. Absent: unknown.
   */
  lastAcked: genId.optional(),
});
export type PeerState = z.infer<typeof peerStateSchema>;

export type Message =
  /** `versions`: the protocol versions the client speaks (absent from daemons before negotiation). */
  | { type: 'hello'; node: string; volume: string; nonce: Buffer; versions?: { min: number; max: number } }
  /** `version`: the one chosen, when the HELLO announced versions (version.ts). */
  | { type: 'challenge'; node: string; nonce: Buffer; proof: Buffer; version?: number }
  | { type: 'auth'; proof: Buffer }
  | { type: 'state'; state: PeerState }
  /** A replicated application write, or (resync) a block pushed by the sync source. */
  | { type: 'write'; id: number; offset: number; data: Buffer; resync: boolean }
  | { type: 'ack'; id: number; status: AckStatusCode }
  | { type: 'flush'; id: number }
  /**
   * The primary's activity-log ranges, sent whenever its hot set changes and before any write into
   * a newly hot extent; acknowledged once durable at the replica (version 4).
   */
  | { type: 'activity'; id: number; ranges: Array<[number, number]> }
  /**
   * The primary named its data anew while the receiver is not in sync with it (it resyncs, or is a
   * tiebreaker): record it as `witnessed`, answered by a STATE (version 5).
   */
  | { type: 'generation'; generation: PeerState['generation'] }
  | { type: 'digestRequest'; id: number; offset: number; length: number; chunk: number }
  | { type: 'digestReply'; id: number; status: AckStatusCode; digests: Buffer }
  | { type: 'readRequest'; id: number; offset: number; length: number }
  | { type: 'readReply'; id: number; status: AckStatusCode; data: Buffer }
  | { type: 'ping' }
  | { type: 'pong' }
  | { type: 'error'; message: string };

export type DecodeMessageResult = { ok: true; message: Message } | { ok: false; error: string };

const hex = (len: number) => z.string().regex(new RegExp(`^[0-9a-f]{${len * 2}}$`));
const protocolVersion = z.number().int().min(1).max(255);
const helloSchema = z.strictObject({
  node: z.string().min(1).max(128),
  volume: z.string().min(1).max(64),
  nonce: hex(NONCE_LENGTH),
  versions: z
    .strictObject({ min: protocolVersion, max: protocolVersion })
    .refine((r) => r.min <= r.max, 'min above max')
    .optional(),
});
const challengeSchema = z.strictObject({
  node: z.string().min(1).max(128),
  nonce: hex(NONCE_LENGTH),
  proof: hex(32),
  version: protocolVersion.optional(),
});
const authSchema = z.strictObject({ proof: hex(32) });
const errorSchema = z.strictObject({ message: z.string().max(1024) });
const activitySchema = z.strictObject({
  id: z.number().int().nonnegative().max(0xffffffff),
  ranges: byteRanges,
});
/** Control messages are tiny; a huge JSON payload is refused before parsing. */
const MAX_CONTROL = 16 * 1024;

function u48(b: Buffer, at: number): number {
  return b.readUIntBE(at, 6);
}
function put48(b: Buffer, at: number, v: number): void {
  b.writeUIntBE(v, at, 6);
}

/**
 * The payload as parts to send in order: a write's or a reply's data is a part of its own, never
 * copied into a new buffer (the connection writes the parts with writev).
 */
export function encodeMessageParts(m: Message): { type: number; parts: Buffer[] } {
  switch (m.type) {
    case 'write': {
      const head = Buffer.allocUnsafe(11);
      head.writeUInt32BE(m.id, 0);
      put48(head, 4, m.offset);
      head.writeUInt8(m.resync ? 1 : 0, 10);
      return { type: MessageType.write, parts: [head, m.data] };
    }
    case 'digestReply':
    case 'readReply': {
      const head = Buffer.allocUnsafe(5);
      head.writeUInt32BE(m.id, 0);
      head.writeUInt8(m.status, 4);
      return { type: MessageType[m.type], parts: [head, m.type === 'digestReply' ? m.digests : m.data] };
    }
    default: {
      const { type, payload } = encodeMessage(m);
      return { type, parts: [payload] };
    }
  }
}

export function encodeMessage(m: Message): { type: number; payload: Buffer } {
  const json = (o: unknown) => Buffer.from(JSON.stringify(o));
  switch (m.type) {
    case 'hello':
      return {
        type: MessageType.hello,
        payload: json({
          node: m.node,
          volume: m.volume,
          nonce: m.nonce.toString('hex'),
          ...(m.versions ? { versions: { min: m.versions.min, max: m.versions.max } } : {}),
        }),
      };
    case 'challenge':
      return {
        type: MessageType.challenge,
        payload: json({
          node: m.node,
          nonce: m.nonce.toString('hex'),
          proof: m.proof.toString('hex'),
          ...(m.version !== undefined ? { version: m.version } : {}),
        }),
      };
    case 'auth':
      return { type: MessageType.auth, payload: json({ proof: m.proof.toString('hex') }) };
    case 'state':
      return { type: MessageType.state, payload: json(m.state) };
    case 'activity':
      return { type: MessageType.activity, payload: json({ id: m.id, ranges: m.ranges }) };
    case 'generation':
      return { type: MessageType.generation, payload: json(m.generation) };
    case 'error':
      return { type: MessageType.error, payload: json({ message: m.message.slice(0, 1024) }) };
    case 'ping':
      return { type: MessageType.ping, payload: Buffer.alloc(0) };
    case 'pong':
      return { type: MessageType.pong, payload: Buffer.alloc(0) };
    case 'write': {
      const p = Buffer.alloc(11 + m.data.length);
      p.writeUInt32BE(m.id, 0);
      put48(p, 4, m.offset);
      p.writeUInt8(m.resync ? 1 : 0, 10);
      m.data.copy(p, 11);
      return { type: MessageType.write, payload: p };
    }
    case 'ack': {
      const p = Buffer.alloc(5);
      p.writeUInt32BE(m.id, 0);
      p.writeUInt8(m.status, 4);
      return { type: MessageType.ack, payload: p };
    }
    case 'flush': {
      const p = Buffer.alloc(4);
      p.writeUInt32BE(m.id, 0);
      return { type: MessageType.flush, payload: p };
    }
    case 'digestRequest':
    case 'readRequest': {
      const p = Buffer.alloc(m.type === 'digestRequest' ? 18 : 14);
      p.writeUInt32BE(m.id, 0);
      put48(p, 4, m.offset);
      p.writeUInt32BE(m.length, 10);
      if (m.type === 'digestRequest') p.writeUInt32BE(m.chunk, 14);
      return { type: MessageType[m.type], payload: p };
    }
    case 'digestReply':
    case 'readReply': {
      const body = m.type === 'digestReply' ? m.digests : m.data;
      const p = Buffer.alloc(5 + body.length);
      p.writeUInt32BE(m.id, 0);
      p.writeUInt8(m.status, 4);
      body.copy(p, 5);
      return { type: MessageType[m.type], payload: p };
    }
  }
}

function parseJson<T>(
  payload: Buffer,
  schema: z.ZodType<T>,
): { ok: true; value: T } | { ok: false; error: string } {
  if (payload.length > MAX_CONTROL)
    return { ok: false, error: `control message too long (${payload.length} bytes)` };
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch {
    return { ok: false, error: 'control message is not JSON' };
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    return {
      ok: false,
      error: `control message invalid: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? ''}`,
    };
  }
  return { ok: true, value: r.data };
}

const statusValues = new Set<number>(Object.values(AckStatus));
function status(b: Buffer, at: number): AckStatusCode | undefined {
  const s = b.readUInt8(at);
  return statusValues.has(s) ? (s as AckStatusCode) : undefined;
}

export function decodeMessage(type: number, payload: Buffer): DecodeMessageResult {
  const bad = (error: string): DecodeMessageResult => ({ ok: false, error });
  const need = (n: number, exact: boolean) => (exact ? payload.length === n : payload.length >= n);
  if (payload.length > MAX_PAYLOAD) return bad('payload too long');
  switch (type) {
    case MessageType.hello: {
      const r = parseJson(payload, helloSchema);
      if (!r.ok) return r;
      return {
        ok: true,
        message: {
          type: 'hello',
          node: r.value.node,
          volume: r.value.volume,
          nonce: Buffer.from(r.value.nonce, 'hex'),
          ...(r.value.versions ? { versions: r.value.versions } : {}),
        },
      };
    }
    case MessageType.challenge: {
      const r = parseJson(payload, challengeSchema);
      if (!r.ok) return r;
      const { node, nonce, proof, version } = r.value;
      return {
        ok: true,
        message: {
          type: 'challenge',
          node,
          nonce: Buffer.from(nonce, 'hex'),
          proof: Buffer.from(proof, 'hex'),
          ...(version !== undefined ? { version } : {}),
        },
      };
    }
    case MessageType.auth: {
      const r = parseJson(payload, authSchema);
      if (!r.ok) return r;
      return { ok: true, message: { type: 'auth', proof: Buffer.from(r.value.proof, 'hex') } };
    }
    case MessageType.state: {
      const r = parseJson(payload, peerStateSchema);
      if (!r.ok) return r;
      return { ok: true, message: { type: 'state', state: r.value } };
    }
    case MessageType.activity: {
      const r = parseJson(payload, activitySchema);
      if (!r.ok) return r;
      return { ok: true, message: { type: 'activity', id: r.value.id, ranges: r.value.ranges } };
    }
    case MessageType.generation: {
      const r = parseJson(payload, generationSchema);
      if (!r.ok) return r;
      return { ok: true, message: { type: 'generation', generation: r.value } };
    }
    case MessageType.error: {
      const r = parseJson(payload, errorSchema);
      if (!r.ok) return r;
      return { ok: true, message: { type: 'error', message: r.value.message } };
    }
    case MessageType.ping:
    case MessageType.pong:
      if (payload.length !== 0) return bad('ping/pong carries no payload');
      return { ok: true, message: { type: type === MessageType.ping ? 'ping' : 'pong' } };
    case MessageType.write: {
      if (!need(11, false)) return bad('write too short');
      const flag = payload.readUInt8(10);
      if (flag > 1) return bad('write: bad flag');
      const data = payload.subarray(11); // a view: the frame's bytes are not reused
      return {
        ok: true,
        message: {
          type: 'write',
          id: payload.readUInt32BE(0),
          offset: u48(payload, 4),
          data,
          resync: flag === 1,
        },
      };
    }
    case MessageType.ack: {
      if (!need(5, true)) return bad('ack: wrong length');
      const s = status(payload, 4);
      if (s === undefined) return bad('ack: unknown status');
      return { ok: true, message: { type: 'ack', id: payload.readUInt32BE(0), status: s } };
    }
    case MessageType.flush:
      if (!need(4, true)) return bad('flush: wrong length');
      return { ok: true, message: { type: 'flush', id: payload.readUInt32BE(0) } };
    case MessageType.digestRequest:
      if (!need(18, true)) return bad('digest request: wrong length');
      return {
        ok: true,
        message: {
          type: 'digestRequest',
          id: payload.readUInt32BE(0),
          offset: u48(payload, 4),
          length: payload.readUInt32BE(10),
          chunk: payload.readUInt32BE(14),
        },
      };
    case MessageType.readRequest:
      if (!need(14, true)) return bad('read request: wrong length');
      return {
        ok: true,
        message: {
          type: 'readRequest',
          id: payload.readUInt32BE(0),
          offset: u48(payload, 4),
          length: payload.readUInt32BE(10),
        },
      };
    case MessageType.digestReply:
    case MessageType.readReply: {
      if (!need(5, false)) return bad('reply too short');
      const s = status(payload, 4);
      if (s === undefined) return bad('reply: unknown status');
      const body = payload.subarray(5);
      const id = payload.readUInt32BE(0);
      return {
        ok: true,
        message:
          type === MessageType.digestReply
            ? { type: 'digestReply', id, status: s, digests: body }
            : { type: 'readReply', id, status: s, data: body },
      };
    }
    default:
      return bad(`unknown message type ${type}`);
  }
}
