/**
 * The membership mesh's heartbeat packet (pure). One UDP datagram, sent by every node to every other
 * node on every link a few times a second:
 *
 *   0  u8   version (1)              8  8B  cluster id (sha256 of the cluster's name, first 8 bytes)
 *   1  u8   link index               16 u64 sender's boot id (grows across the sender's restarts)
 *   2  u8   sender name length       24 u64 sequence number (per receiver and link, from 1 in each boot)
 *   3  u8   receiver name length     32 f64 send time (sender's clock, ms)
 *   4  u8   view entries             40 f64 echo: the receiver's send time last heard on this link (0: none)
 *   5  3B   zero                     48 f64 hold: ms between hearing that echo and sending this packet
 *   56 sender, receiver (ASCII), then the view entries, then 32 bytes HMAC-SHA256 over everything before it.
 *
 * A view entry is the sender's own view of one of its links (so any node can show the whole matrix of
 * who sees whom): name length u8, name, link u8, state u8 (0 unknown, 1 up, 2 down), RTT average u16
 * in 10 µs units (0xffff: none), loss u16 in 1/100 % (0xffff: none).
 *
 * The receiver and the link are under the MAC, so a packet cannot be replayed to another node or
 * on another link; the sequence (checked by the link tracker) stops replays of old packets.
 * `decodeHeartbeat` never throws on network input: it returns the packet or a reason to drop it.
 *
 * Versions (rolling upgrades): the first byte is the version, in every version. A packet of another
 * version is dropped and counted as `version` (the sender's address shown), never misread. Bytes
 * between the last view entry and the MAC are ignored: a later release adds optional data there
 * without a new version, so old and new nodes keep seeing each other; a change that old nodes cannot
 * ignore takes a new version, and the release that brings it must still send and accept this one
 * until every node has it (a mesh with both would otherwise be split in two: visibility only, the
 * lease alone decides fencing and failover).
 */
import { createHash, createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto';

export const MESH_VERSION = 1;
export const MAC_LENGTH = 32;
export const HEADER_LENGTH = 56;
const NO_RTT = 0xffff;
const NO_LOSS = 0xffff;
const U32 = 0x1_0000_0000;

export type LinkStateName = 'unknown' | 'up' | 'down';
const STATES: LinkStateName[] = ['unknown', 'up', 'down'];

/** The sender's view of one of its links to another node. */
export interface ViewEntry {
  node: string;
  link: number;
  state: LinkStateName;
  /** Average round-trip time over the last minute, ms (10 µs resolution, at most 655 ms), or null. */
  rttMs: number | null;
  /** Loss over the last minute, percent (0.01 % resolution), or null. */
  lossPct: number | null;
}

export interface HeartbeatHeader {
  link: number;
  sender: string;
  receiver: string;
  boot: number;
  seq: number;
  sentAt: number;
  echo: number;
  hold: number;
}

export interface Heartbeat extends HeartbeatHeader {
  view: ViewEntry[];
}

/**
 * A heartbeat as received: its view is kept as the (checked) bytes and parsed only when someone asks
 * (`parseView`): nothing is allocated for it on the receive path.
 */
export interface ReceivedHeartbeat extends HeartbeatHeader {
  view: Buffer;
}

export type DropReason =
  | 'short'
  | 'version'
  | 'cluster'
  | 'unknown-node'
  | 'misdirected'
  | 'mac'
  | 'malformed'
  | 'replay';

export const DROP_REASONS: readonly DropReason[] = [
  'short',
  'version',
  'cluster',
  'unknown-node',
  'misdirected',
  'mac',
  'malformed',
  'replay',
];

export type Decoded = { ok: true; hb: ReceivedHeartbeat } | { ok: false; reason: DropReason };

export interface MeshKeys {
  /**
   * HMAC key, derived from the cluster's secret (the secret itself keys only derivations); a KeyObject,
   * so it is not imported again for every packet.
   */
  key: KeyObject;
  clusterId: Buffer;
}

export function meshKeys(secret: Buffer, cluster: string): MeshKeys {
  return {
    key: createSecretKey(createHmac('sha256', secret).update(`cvserver-mesh-v1\0${cluster}`).digest()),
    clusterId: createHash('sha256').update(`cvserver-cluster\0${cluster}`).digest().subarray(0, 8),
  };
}

export interface DecodeContext {
  keys: MeshKeys;
  /** This node: the only receiver accepted. */
  me: string;
  /** The link the packet arrived on (the local address's index): the only link accepted. */
  link: number;
  /** The other nodes of the cluster. */
  known: ReadonlySet<string>;
}

function viewLength(view: ViewEntry[]): number {
  let n = 0;
  for (const e of view) n += 7 + e.node.length;
  return n;
}

export function encodedLength(hb: Heartbeat): number {
  return HEADER_LENGTH + hb.sender.length + hb.receiver.length + viewLength(hb.view) + MAC_LENGTH;
}

function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32BE(Math.floor(value / U32) >>> 0, at);
  buf.writeUInt32BE((value % U32) >>> 0, at + 4);
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32BE(at) * U32 + buf.readUInt32BE(at + 4);
}

/**
 * Writes the packet into `out` when it is large enough (the shell keeps one buffer per peer and link),
 * else into a new buffer; returns the bytes to send.
 */
export function encodeHeartbeat(hb: Heartbeat, keys: MeshKeys, out?: Buffer): Buffer {
  const len = encodedLength(hb);
  if (hb.sender.length > 255 || hb.receiver.length > 255 || hb.view.length > 255)
    throw new Error('heartbeat: a name or the view is too long');
  const buf = out && out.length >= len ? out.subarray(0, len) : Buffer.allocUnsafe(len);
  buf.writeUInt8(MESH_VERSION, 0);
  buf.writeUInt8(hb.link, 1);
  buf.writeUInt8(hb.sender.length, 2);
  buf.writeUInt8(hb.receiver.length, 3);
  buf.writeUInt8(hb.view.length, 4);
  buf.fill(0, 5, 8);
  keys.clusterId.copy(buf, 8);
  writeU64(buf, hb.boot, 16);
  writeU64(buf, hb.seq, 24);
  buf.writeDoubleBE(hb.sentAt, 32);
  buf.writeDoubleBE(hb.echo, 40);
  buf.writeDoubleBE(hb.hold, 48);
  let at = HEADER_LENGTH;
  at += buf.write(hb.sender, at, 'latin1');
  at += buf.write(hb.receiver, at, 'latin1');
  for (const e of hb.view) {
    buf.writeUInt8(e.node.length, at++);
    at += buf.write(e.node, at, 'latin1');
    buf.writeUInt8(e.link, at++);
    buf.writeUInt8(STATES.indexOf(e.state), at++);
    buf.writeUInt16BE(e.rttMs === null ? NO_RTT : Math.min(NO_RTT - 1, Math.round(e.rttMs * 100)), at);
    buf.writeUInt16BE(
      e.lossPct === null ? NO_LOSS : Math.min(10_000, Math.max(0, Math.round(e.lossPct * 100))),
      at + 2,
    );
    at += 4;
  }
  createHmac('sha256', keys.key).update(buf.subarray(0, at)).digest().copy(buf, at);
  return buf;
}

/** The packet, or why it is dropped. Checks in order of cost; the MAC before anything is trusted. */
export function decodeHeartbeat(buf: Buffer, ctx: DecodeContext): Decoded {
  if (buf.length < HEADER_LENGTH + MAC_LENGTH) return { ok: false, reason: 'short' };
  if (buf[0] !== MESH_VERSION) return { ok: false, reason: 'version' };
  if (!buf.subarray(8, 16).equals(ctx.keys.clusterId)) return { ok: false, reason: 'cluster' };
  const sLen = buf[2]!;
  const rLen = buf[3]!;
  const macAt = buf.length - MAC_LENGTH;
  if (HEADER_LENGTH + sLen + rLen > macAt) return { ok: false, reason: 'short' };
  const sender = buf.toString('latin1', HEADER_LENGTH, HEADER_LENGTH + sLen);
  if (!ctx.known.has(sender)) return { ok: false, reason: 'unknown-node' };
  const receiver = buf.toString('latin1', HEADER_LENGTH + sLen, HEADER_LENGTH + sLen + rLen);
  const link = buf[1]!;
  if (receiver !== ctx.me || link !== ctx.link) return { ok: false, reason: 'misdirected' };
  const expected = createHmac('sha256', ctx.keys.key).update(buf.subarray(0, macAt)).digest();
  if (!timingSafeEqual(expected, buf.subarray(macAt))) return { ok: false, reason: 'mac' };

  // Authentic from here on: a malformed view is a sender's bug, still never a throw.
  const viewAt = HEADER_LENGTH + sLen + rLen;
  // Whatever follows the view is a later release's optional data (see the header): ignored.
  const viewStop = viewEnd(buf, viewAt, macAt, buf[4]!);
  if (viewStop < 0) return { ok: false, reason: 'malformed' };
  const sentAt = buf.readDoubleBE(32);
  const echo = buf.readDoubleBE(40);
  const hold = buf.readDoubleBE(48);
  if (![sentAt, echo, hold].every(Number.isFinite)) return { ok: false, reason: 'malformed' };
  return {
    ok: true,
    hb: {
      link,
      sender,
      receiver,
      boot: readU64(buf, 16),
      seq: readU64(buf, 24),
      sentAt,
      echo,
      hold,
      view: buf.subarray(viewAt, viewStop),
    },
  };
}

/** Where `count` view entries starting at `at` end, or -1 when they do not fit before `limit`. */
function viewEnd(buf: Buffer, at: number, limit: number, count: number): number {
  for (let i = 0; i < count; i++) {
    if (at >= limit) return -1;
    at += 1 + buf[at]! + 6;
    if (at > limit || buf[at - 5]! >= STATES.length) return -1;
  }
  return at;
}

/** The entries of a received view (checked by `decodeHeartbeat`: whole entries only). */
export function parseView(b: Buffer): ViewEntry[] {
  const view: ViewEntry[] = [];
  let at = 0;
  while (at + 7 <= b.length) {
    const nLen = b[at]!;
    const node = b.toString('latin1', at + 1, at + 1 + nLen);
    at += 1 + nLen;
    const rtt = b.readUInt16BE(at + 2);
    const loss = b.readUInt16BE(at + 4);
    view.push({
      node,
      link: b[at]!,
      state: STATES[b[at + 1]!] ?? 'unknown',
      rttMs: rtt === NO_RTT ? null : rtt / 100,
      lossPct: loss === NO_LOSS ? null : loss / 100,
    });
    at += 6;
  }
  return view;
}
