import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  type DecodeContext,
  decodeHeartbeat,
  encodedLength,
  encodeHeartbeat,
  type Heartbeat,
  MAC_LENGTH,
  MESH_VERSION,
  meshKeys,
  parseView,
} from '../../../../src/agent/mesh/codec.ts';
import { checkSequence, nextBootId } from '../../../../src/agent/mesh/sequence.ts';

const secret = Buffer.from('0123456789abcdef0123456789abcdef');
const keys = meshKeys(secret, 'demo');
const ctx: DecodeContext = { keys, me: 'n2', link: 1, known: new Set(['n1', 'n3']) };

const hb: Heartbeat = {
  link: 1,
  sender: 'n1',
  receiver: 'n2',
  boot: 1_750_000_000_123,
  seq: 2 ** 40 + 7,
  sentAt: 123456.789,
  echo: 123000.5,
  hold: 12.25,
  view: [
    { node: 'n2', link: 0, state: 'up', rttMs: 0.31, lossPct: 0 },
    { node: 'n2', link: 1, state: 'down', rttMs: null, lossPct: 100 },
    { node: 'n3', link: 0, state: 'unknown', rttMs: null, lossPct: null },
  ],
};

test('codec: a heartbeat round-trips, in a reused buffer too', () => {
  const buf = encodeHeartbeat(hb, keys);
  assert.equal(buf.length, encodedLength(hb));
  const d0 = decodeHeartbeat(buf, ctx);
  assert.ok(d0.ok);
  assert.deepEqual({ ...d0.hb, view: parseView(d0.hb.view) }, hb);
  const out = Buffer.alloc(1024);
  const again = encodeHeartbeat({ ...hb, seq: hb.seq + 1 }, keys, out);
  assert.equal(again.buffer, out.buffer, 'written into the given buffer');
  const d = decodeHeartbeat(again, ctx);
  assert.ok(d.ok && d.hb.seq === hb.seq + 1);
});

test('codec: forged, truncated, foreign and random packets are dropped with a reason, never thrown', () => {
  const good = encodeHeartbeat(hb, keys);
  const reason = (b: Buffer, c: DecodeContext = ctx) => {
    const d = decodeHeartbeat(b, c);
    return d.ok ? 'ok' : d.reason;
  };
  // a flipped bit anywhere under the MAC, or in the MAC itself
  for (const at of [20, 30, 40, 60, good.length - 40, good.length - 1]) {
    const forged = Buffer.from(good);
    forged[at]! ^= 0x01;
    assert.equal(reason(forged), 'mac', `bit flipped at ${at}`);
  }
  // signed with another secret
  assert.equal(reason(encodeHeartbeat(hb, meshKeys(randomBytes(32), 'demo'))), 'mac');
  // another cluster (its id differs), another version
  assert.equal(reason(encodeHeartbeat(hb, meshKeys(secret, 'other'))), 'cluster');
  const v2 = Buffer.from(good);
  v2[0] = 2;
  assert.equal(reason(v2), 'version');
  // a stranger, ourselves, another receiver, another link
  assert.equal(reason(encodeHeartbeat({ ...hb, sender: 'x9' }, keys)), 'unknown-node');
  assert.equal(reason(encodeHeartbeat({ ...hb, sender: 'n2' }, keys)), 'unknown-node');
  assert.equal(reason(encodeHeartbeat({ ...hb, receiver: 'n3' }, keys)), 'misdirected');
  assert.equal(reason(good, { ...ctx, link: 0 }), 'misdirected');
  // truncated at every length
  for (let n = 0; n < good.length; n++)
    assert.notEqual(reason(good.subarray(0, n)), 'ok', `truncated to ${n}`);
  assert.equal(reason(Buffer.alloc(0)), 'short');
  // random bytes, and random bytes behind a valid-looking header
  for (let i = 0; i < 2000; i++) {
    const r = randomBytes(Math.floor(Math.random() * 300));
    assert.notEqual(reason(r), 'ok');
    const h = Buffer.concat([good.subarray(0, 58), randomBytes(Math.floor(Math.random() * 200))]);
    assert.notEqual(reason(h), 'ok');
  }
  // a view that claims more entries than it carries, correctly signed: malformed, not a throw
  const lying = Buffer.from(good.subarray(0, good.length - MAC_LENGTH));
  lying[4] = 9;
  const signed = Buffer.concat([lying, createHmac('sha256', keys.key).update(lying).digest()]);
  assert.equal(reason(signed), 'malformed');
});

test('sequence: a later number or a later boot is new; anything else is a replay', () => {
  const last = { boot: 100, seq: 50 };
  assert.deepEqual(checkSequence(last, 100, 51), { fresh: true, gap: 0 });
  assert.deepEqual(checkSequence(last, 100, 55), { fresh: true, gap: 4 });
  assert.deepEqual(checkSequence(last, 100, 50), { fresh: false });
  assert.deepEqual(checkSequence(last, 100, 3), { fresh: false });
  assert.deepEqual(checkSequence(last, 99, 1000), { fresh: false }, 'an earlier boot');
  assert.deepEqual(checkSequence(last, 101, 1), { fresh: true, gap: null }, 'the sender restarted');
  assert.deepEqual(checkSequence({ boot: 0, seq: 0 }, 5, 9), { fresh: true, gap: null });
  // the boot id grows across restarts even when the wall clock stepped back
  assert.equal(nextBootId(undefined, 1000.7), 1000);
  assert.equal(nextBootId(5000, 1000), 5001);
  assert.equal(nextBootId(5000, 9000), 9000);
});

test('codec, versions: a next-version packet is dropped as "version"; optional data after the view is ignored', () => {
  const reason = (b: Buffer) => {
    const d = decodeHeartbeat(b, ctx);
    return d.ok ? 'ok' : d.reason;
  };
  // A packet of the next version, whatever its layout (longer, shorter, signed or not): dropped, counted.
  const next = encodeHeartbeat(hb, keys);
  next[0] = MESH_VERSION + 1;
  assert.equal(reason(next), 'version');
  for (let i = 0; i < 200; i++) {
    const r = Buffer.concat([Buffer.from([MESH_VERSION + 1]), randomBytes(Math.floor(Math.random() * 400))]);
    assert.equal(reason(r), r.length < 88 ? 'short' : 'version');
  }
  // This version with bytes a later release added after the view (signed): read as before.
  const body = encodeHeartbeat(hb, keys).subarray(0, encodedLength(hb) - MAC_LENGTH);
  const extended = Buffer.concat([body, Buffer.from('later: optional data')]);
  const signed = Buffer.concat([extended, createHmac('sha256', keys.key).update(extended).digest()]);
  const d = decodeHeartbeat(signed, ctx);
  assert.ok(d.ok);
  assert.deepEqual({ ...d.hb, view: parseView(d.hb.view) }, hb);
});
