import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { crc32 } from 'node:zlib';
import { isDirectIoAligned } from '../../../src/lib/aligned-buffers.ts';
import {
  clientProof,
  HANDSHAKE_KEY,
  proofMatches,
  serverProof,
  sessionKeys,
  type Transcript,
} from '../../../src/volume/replication/auth.ts';
import {
  type DecodeResult,
  encodeFrame,
  encodeFrameParts,
  FrameDecoder,
  HEADER_LENGTH,
  MAC_LENGTH,
  MAX_PAYLOAD,
  macKey,
} from '../../../src/volume/replication/frame.ts';
import { FramePool, POOLED_FRAME_MIN } from '../../../src/volume/replication/frame-pool.ts';
import {
  decodeMessage,
  encodeMessage,
  encodeMessageParts,
  type Message,
} from '../../../src/volume/replication/protocol.ts';

const key = Buffer.alloc(32, 7);
const frame = (seq: number, payload = Buffer.from('hello'), epoch = 3) =>
  encodeFrame(key, { type: 10, seq, epoch, payload });
const errors = (rs: DecodeResult[]) => rs.filter((r) => !r.ok).map((r) => (r.ok ? '' : r.error));

test('frames round-trip, also when split into single bytes', () => {
  const bytes = Buffer.concat([frame(0), frame(1, Buffer.alloc(70000, 1)), frame(2, Buffer.alloc(0))]);
  const whole = new FrameDecoder(key).push(bytes);
  assert.deepEqual(
    whole.map((r) => (r.ok ? [r.frame.seq, r.frame.payload.length, r.frame.epoch] : r.error)),
    [
      [0, 5, 3],
      [1, 70000, 3],
      [2, 0, 3],
    ],
  );
  const dec = new FrameDecoder(key);
  const out: DecodeResult[] = [];
  for (const b of bytes) out.push(...dec.push(Buffer.from([b])));
  assert.equal(out.length, 3);
  assert.ok(out.every((r) => r.ok));
});

test('truncated header or payload yields nothing yet, never an exception', () => {
  const f = frame(0);
  for (let n = 0; n < f.length; n++) assert.deepEqual(new FrameDecoder(key).push(f.subarray(0, n)), []);
});

test('hostile input produces one error and then the decoder stays failed', () => {
  const cases: Array<[string, Buffer, string]> = [];
  const badMagic = frame(0);
  badMagic[0] = 0;
  cases.push(['magic', badMagic, 'bad-magic']);
  const badVersion = frame(0);
  badVersion[4] = 9;
  cases.push(['version', badVersion, 'bad-version']);
  const huge = frame(0);
  huge.writeUInt32BE(0xffffffff, 8);
  cases.push(['huge length, header checksum not updated', Buffer.from(huge), 'bad-crc']);
  huge.writeUInt32BE(crc32(huge.subarray(0, 28)), 28);
  cases.push(['huge length', huge, 'too-long']);
  const flipped = frame(0);
  flipped.writeUInt8(flipped.readUInt8(HEADER_LENGTH + 1) ^ 1, HEADER_LENGTH + 1);
  cases.push(['corrupt payload (the MAC covers it)', flipped, 'bad-mac']);
  const tag = frame(0);
  tag[tag.length - 1] = (tag[tag.length - 1] ?? 0) ^ 1;
  cases.push(['corrupt MAC', tag, 'bad-mac']);
  const wrongKey = encodeFrame(Buffer.alloc(32, 8), {
    type: 10,
    seq: 0,
    epoch: 0,
    payload: Buffer.from('x'),
  });
  cases.push(['wrong MAC key', wrongKey, 'bad-mac']);
  cases.push(['replayed frame', Buffer.concat([frame(0), frame(0)]), 'bad-seq']);
  cases.push(['skipped sequence', frame(1), 'bad-seq']);
  cases.push(['epoch beyond 2^53', encodeFrameRawEpoch(), 'bad-epoch']);
  for (const [name, bytes, expected] of cases) {
    const dec = new FrameDecoder(key);
    assert.deepEqual(errors(dec.push(bytes)), [expected], name);
    assert.ok(dec.failed, name);
    assert.deepEqual(errors(dec.push(frame(1))), ['decoder-failed'], name);
  }
});

function encodeFrameRawEpoch(): Buffer {
  // A correctly MACed frame whose epoch does not fit a safe integer (a peer with the key but a bug).
  return encodeFrame(key, { type: 10, seq: 0, epoch: 2 ** 60, payload: Buffer.alloc(0) });
}

test('random bytes never throw and never yield a frame', () => {
  for (let i = 0; i < 500; i++) {
    const dec = new FrameDecoder(key);
    const rs = dec.push(randomBytes(1 + (i % 200) * 13));
    assert.ok(rs.every((r) => !r.ok));
  }
});

test('a frame sent as parts is byte-identical to the contiguous encoding, and decodes to views', () => {
  const data = randomBytes(70000);
  const head = Buffer.from([1, 2, 3]);
  const parts = encodeFrameParts(macKey(key), { type: 10, seq: 0, epoch: 3, parts: [head, data] });
  assert.equal(parts[2], data); // the payload itself, not a copy
  const whole = Buffer.concat(parts);
  assert.deepEqual(whole, frame(0, Buffer.concat([head, data])));
  const [r] = new FrameDecoder(key).push(whole);
  assert.ok(r?.ok);
  assert.equal(r.frame.payload.buffer, whole.buffer); // a view of the received bytes
  assert.equal(whole.length, HEADER_LENGTH + 3 + 70000 + MAC_LENGTH);
});

test('encoder refuses payloads over the hard maximum', () => {
  assert.throws(
    () => encodeFrame(key, { type: 1, seq: 0, epoch: 0, payload: Buffer.alloc(MAX_PAYLOAD + 1) }),
    RangeError,
  );
});

test('messages round-trip through their codecs', () => {
  const state = {
    node: 'n1',
    role: 'Secondary' as const,
    diskState: 'UpToDate' as const,
    generation: { current: 'ab', bitmap: '0', history: ['cd'] },
    crashedPrimary: false,
    epoch: 4,
    size: 1 << 30,
    changedBlocks: 0,
    promotedAt: 0,
  };
  const msgs: Message[] = [
    { type: 'hello', node: 'n1', volume: 'v', nonce: Buffer.alloc(32, 1) },
    { type: 'challenge', node: 'n2', nonce: Buffer.alloc(32, 2), proof: Buffer.alloc(32, 3) },
    { type: 'auth', proof: Buffer.alloc(32, 4) },
    { type: 'state', state },
    { type: 'write', id: 7, offset: 2 ** 40, data: Buffer.alloc(4096, 9), resync: true },
    { type: 'ack', id: 7, status: 2 },
    { type: 'flush', id: 8 },
    { type: 'digestRequest', id: 9, offset: 4096, length: 1 << 20, chunk: 65536 },
    { type: 'digestReply', id: 9, status: 0, digests: Buffer.alloc(64, 5) },
    { type: 'readRequest', id: 10, offset: 0, length: 4096 },
    { type: 'readReply', id: 10, status: 0, data: Buffer.alloc(4096, 6) },
    { type: 'ping' },
    { type: 'pong' },
    { type: 'error', message: 'no' },
  ];
  for (const m of msgs) {
    const { type, payload } = encodeMessage(m);
    assert.deepEqual(decodeMessage(type, payload), { ok: true, message: m }, m.type);
    const parts = encodeMessageParts(m);
    assert.deepEqual(Buffer.concat(parts.parts), payload, m.type);
    assert.equal(parts.type, type);
  }
});

test('hostile payloads decode to errors, never exceptions', () => {
  for (let type = 0; type < 256; type++) {
    for (const payload of [
      Buffer.alloc(0),
      randomBytes(3),
      randomBytes(17),
      Buffer.from('{"node":1}'),
      Buffer.alloc(20000, 0x7b),
    ]) {
      const r = decodeMessage(type, payload);
      if (r.ok)
        assert.ok(
          [
            'write',
            'readReply',
            'digestReply',
            'ping',
            'pong',
            'flush',
            'readRequest',
            'digestRequest',
          ].includes(r.message.type),
        );
    }
  }
  assert.equal(decodeMessage(11, Buffer.from([0, 0, 0, 1, 99])).ok, false); // unknown ack status
  assert.equal(decodeMessage(4, Buffer.from('{"node":"x"}')).ok, false);
});

test('handshake proofs and session keys depend on the secret and both nonces', () => {
  const secret = Buffer.from('cluster secret');
  const t: Transcript = {
    clientNode: 'a',
    serverNode: 'b',
    volumeUuid: 'u',
    clientNonce: randomBytes(32),
    serverNonce: randomBytes(32),
  };
  assert.ok(proofMatches(serverProof(secret, t), serverProof(Buffer.from('cluster secret'), t)));
  assert.ok(!proofMatches(serverProof(secret, t), serverProof(Buffer.from('wrong'), t)));
  assert.ok(!proofMatches(serverProof(secret, t), clientProof(secret, t)));
  assert.ok(
    !proofMatches(serverProof(secret, t), serverProof(secret, { ...t, serverNonce: randomBytes(32) })),
  );
  assert.ok(!proofMatches(serverProof(secret, t), Buffer.alloc(5)));
  const k1 = sessionKeys(secret, t);
  const k2 = sessionKeys(secret, { ...t, clientNonce: randomBytes(32) });
  assert.notDeepEqual(k1.clientToServer, k1.serverToClient);
  assert.notDeepEqual(k1.clientToServer, k2.clientToServer);
  assert.notDeepEqual(k1.clientToServer, HANDSHAKE_KEY);
  // A frame recorded on one session is refused on another (MAC under a different key).
  const recorded = encodeFrame(k1.clientToServer, { type: 10, seq: 0, epoch: 1, payload: Buffer.from('x') });
  assert.deepEqual(errors(new FrameDecoder(k2.clientToServer).push(recorded)), ['bad-mac']);
});

test('a large frame split across chunks is gathered into a pooled slot, which is reused once released', () => {
  const pool = new FramePool({ maxIdle: 4 });
  const dec = new FrameDecoder(key, pool, POOLED_FRAME_MIN);
  const payload = randomBytes(200_000);
  const bytes = frame(0, payload);
  const out: DecodeResult[] = [];
  for (let at = 0; at < bytes.length; at += 65536) out.push(...dec.push(bytes.subarray(at, at + 65536)));
  const [r] = out;
  assert.ok(r?.ok && r.frame.slot);
  assert.deepEqual(r.frame.payload, payload);
  assert.equal(r.frame.payload.buffer, r.frame.slot.buffer);
  // A WRITE's data (after its 11-byte head) lands on a direct-I/O boundary: O_DIRECT without a bounce.
  assert.ok(isDirectIoAligned(r.frame.payload.subarray(11)));
  const made = pool.allocated;
  pool.release(r.frame.slot);
  const again = frame(1, randomBytes(100_000));
  const out2: DecodeResult[] = [];
  for (let at = 0; at < again.length; at += 65536) out2.push(...dec.push(again.subarray(at, at + 65536)));
  assert.ok(out2[0]?.ok && out2[0].frame.slot);
  assert.equal(pool.allocated, made); // no new slot
  // Small frames, or a frame inside one chunk, are views of the input: no slot.
  const [small] = dec.push(frame(2));
  assert.ok(small?.ok && small.frame.slot === undefined);
});
