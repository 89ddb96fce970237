import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROTOCOL_VERSION } from '../../../src/volume/replication/frame.ts';
import {
  decodeMessage,
  encodeMessage,
  type Message,
  MessageType,
} from '../../../src/volume/replication/protocol.ts';
import {
  forVersion,
  helloVersions,
  localVersions,
  MIN_PROTOCOL_VERSION,
  negotiate,
  type VersionRange,
} from '../../../src/volume/replication/version.ts';

const r = (min: number, max = min): VersionRange => ({ min, max });
const names = { local: 'a', peer: 'b' };

test('negotiation: the highest version both speak, or a reason that names the node to upgrade', () => {
  const cases: Array<[string, VersionRange, VersionRange, number | RegExp]> = [
    ['same build', r(2, 3), r(2, 3), 3],
    ['peer pinned to 2', r(2, 3), r(2), 2],
    ['this side pinned to 2', r(2), r(2, 3), 2],
    ['peer of before the negotiation, version 3', r(2, 3), r(3), 3],
    ['peer of before the negotiation, version 2', r(2, 3), r(2), 2],
    ['next release against this one', r(3, 4), r(2, 3), 3],
    ['overlap of one', r(2, 3), r(3, 5), 3],
    ['peer too old', r(3, 4), r(2), /a speaks 3-4, b speaks 2 \(upgrade cvserver on b\)/],
    ['this side too old', r(2), r(3, 5), /a speaks 2, b speaks 3-5 \(upgrade cvserver on a\)/],
  ];
  for (const [what, local, peer, want] of cases) {
    const n = negotiate(local, peer, names);
    if (typeof want === 'number') assert.deepEqual(n, { ok: true, version: want }, what);
    else {
      assert.equal(n.ok, false, what);
      if (!n.ok) {
        assert.match(n.reason, /^no common replication protocol version: /, what);
        assert.match(n.reason, want, what);
      }
    }
    // Symmetric: both sides reach the same version (or both refuse).
    const back = negotiate(peer, local, { local: 'b', peer: 'a' });
    assert.equal(back.ok, n.ok, `${what} (other side)`);
    if (back.ok && n.ok) assert.equal(back.version, n.version, `${what} (other side)`);
  }
});

test('a HELLO without versions comes from a daemon of before the negotiation: it speaks its frame version', () => {
  assert.deepEqual(helloVersions(3, undefined), r(3));
  assert.deepEqual(helloVersions(3, r(2, 4)), r(2, 4));
});

test('CVSERVER_REPLICATION_MAX_VERSION pins what a daemon speaks; a bad value is refused', () => {
  assert.deepEqual(localVersions({}), r(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION));
  assert.deepEqual(localVersions({ CVSERVER_REPLICATION_MAX_VERSION: '' }), r(2, PROTOCOL_VERSION));
  assert.deepEqual(localVersions({ CVSERVER_REPLICATION_MAX_VERSION: '2' }), r(2));
  assert.deepEqual(localVersions({ CVSERVER_REPLICATION_MAX_VERSION: String(PROTOCOL_VERSION) }), r(2, 5));
  for (const bad of ['1', '9', 'x', '2.5'])
    assert.throws(
      () => localVersions({ CVSERVER_REPLICATION_MAX_VERSION: bad }),
      /CVSERVER_REPLICATION_MAX_VERSION=.*: expected a replication protocol version from 2 to 5/,
    );
});

const baseState = {
  node: 'a',
  role: 'Secondary' as const,
  diskState: 'UpToDate' as const,
  generation: { current: 'a1', bitmap: '0', history: [] },
  crashedPrimary: false,
  epoch: 4,
  size: 1024,
  changedBlocks: 0,
  promotedAt: 0,
};

test('speaking version 2: a STATE leaves out `sent` (a version 2 peer refuses unknown fields)', () => {
  const state = { ...baseState, sent: 'update' as const };
  const m: Message = { type: 'state', state };
  const v2 = forVersion(m, 2);
  assert.ok(v2.type === 'state' && !('sent' in v2.state));
  assert.equal(v2.type === 'state' && v2.state.epoch, 4);
  assert.equal(forVersion(m, 3), m);
  const ping: Message = { type: 'ping' };
  assert.equal(forVersion(ping, 2), ping);
});

test('HELLO and CHALLENGE carry the versions, and decode without them from older daemons', () => {
  const nonce = Buffer.alloc(32, 1);
  const hello: Message = { type: 'hello', node: 'a', volume: 'v', nonce, versions: r(2, 3) };
  const e = encodeMessage(hello);
  assert.deepEqual(decodeMessage(e.type, e.payload), { ok: true, message: hello });
  const legacy = Buffer.from(JSON.stringify({ node: 'a', volume: 'v', nonce: nonce.toString('hex') }));
  const d = decodeMessage(MessageType.hello, legacy);
  assert.ok(d.ok && d.message.type === 'hello' && d.message.versions === undefined);
  const backwards = Buffer.from(
    JSON.stringify({ node: 'a', volume: 'v', nonce: nonce.toString('hex'), versions: { min: 3, max: 2 } }),
  );
  assert.equal(decodeMessage(MessageType.hello, backwards).ok, false);

  const ch: Message = { type: 'challenge', node: 'b', nonce, proof: Buffer.alloc(32, 2), version: 2 };
  const c = encodeMessage(ch);
  assert.deepEqual(decodeMessage(c.type, c.payload), { ok: true, message: ch });
  const { version: _v, ...plain } = ch;
  const p = encodeMessage(plain);
  assert.ok(!p.payload.toString().includes('version'), 'no version field for an older client');
});

test('speaking version 3: a STATE leaves out `activity`, and ACTIVITY round-trips in version 4', () => {
  const state = {
    ...baseState,
    sent: 'reply' as const,
    activity: { from: 'c', epoch: 3, current: [[0, 4096] as [number, number]], carried: [] },
  };
  const m: Message = { type: 'state', state };
  const v3 = forVersion(m, 3);
  assert.ok(v3.type === 'state' && !('activity' in v3.state) && v3.state.sent === 'reply');
  const v2 = forVersion(m, 2);
  assert.ok(v2.type === 'state' && !('activity' in v2.state) && !('sent' in v2.state));
  assert.equal(forVersion(m, 4), m);
  const e = encodeMessage(m);
  assert.deepEqual(decodeMessage(e.type, e.payload), { ok: true, message: m });

  const activity: Message = {
    type: 'activity',
    id: 9,
    ranges: [
      [0, 4096],
      [1 << 22, 1 << 22],
    ],
  };
  const a = encodeMessage(activity);
  assert.deepEqual(decodeMessage(a.type, a.payload), { ok: true, message: activity });
  const bad = Buffer.from(JSON.stringify({ id: 1, ranges: [[0, 0]] }));
  assert.equal(decodeMessage(MessageType.activity, bad).ok, false, 'an empty range is refused');
});

test('speaking version 4: a STATE leaves out `witnessed`, and GENERATION round-trips in version 5', () => {
  const witnessed = { current: 'b2', bitmap: 'a1', history: ['a1'] };
  const m: Message = { type: 'state', state: { ...baseState, witnessed } };
  const v4 = forVersion(m, 4);
  assert.ok(v4.type === 'state' && !('witnessed' in v4.state));
  assert.equal(forVersion(m, 5), m);
  const e = encodeMessage(m);
  assert.deepEqual(decodeMessage(e.type, e.payload), { ok: true, message: m });

  const generation: Message = { type: 'generation', generation: witnessed };
  const g = encodeMessage(generation);
  assert.equal(g.type, MessageType.generation);
  assert.deepEqual(decodeMessage(g.type, g.payload), { ok: true, message: generation });
  for (const bad of [
    { current: 'B2', bitmap: '0', history: [] },
    { current: 'b2', bitmap: '0' },
    { current: 'b2', bitmap: '0', history: [], extra: 1 },
  ]) {
    const r = decodeMessage(MessageType.generation, Buffer.from(JSON.stringify(bad)));
    assert.equal(r.ok, false, JSON.stringify(bad));
  }
  assert.equal(decodeMessage(MessageType.generation, Buffer.from('{')).ok, false, 'not JSON');
});
