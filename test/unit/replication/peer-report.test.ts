import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  afterNoneDecision,
  type DiskStateSource,
  diskStateReport,
  stateKey,
  stateSource,
} from '../../../src/volume/replication/peer-report.ts';
import type { PeerState } from '../../../src/volume/replication/protocol.ts';

test('stateSource: the first STATE of a connection is the handshake; later ones say why they came', () => {
  const table: Array<[boolean, PeerState['sent'], DiskStateSource]> = [
    [true, undefined, 'handshake'],
    [true, 'update', 'handshake'],
    [false, 'reply', 'state-reply'],
    [false, 'update', 'peer-update'],
    // A later STATE that does not say is an answer (the only kind there was before `sent`).
    [false, undefined, 'state-reply'],
  ];
  for (const [first, sent, want] of table) assert.equal(stateSource(first, sent), want, `${first} ${sent}`);
});

const base: PeerState = {
  node: 'b',
  role: 'Secondary',
  diskState: 'Inconsistent',
  generation: { current: 'a1', bitmap: '0', history: [] },
  crashedPrimary: false,
  epoch: 3,
  size: 1024,
  changedBlocks: 0,
  promotedAt: 0,
};

test('stateKey: a replica pushes a STATE for what the primary acts on, not for its change counter', () => {
  const table: Array<[string, Partial<PeerState>, boolean]> = [
    ['disk state', { diskState: 'UpToDate' }, true],
    ['generation', { generation: { current: 'b2', bitmap: '0', history: ['a1'] } }, true],
    ['bitmap id', { generation: { current: 'a1', bitmap: 'a0', history: [] } }, true],
    ['epoch', { epoch: 4 }, true],
    ['role', { role: 'Primary' }, true],
    ['crashed primary', { crashedPrimary: true }, true],
    ['changed blocks', { changedBlocks: 99 }, false],
    ['why it was sent', { sent: 'update' }, false],
  ];
  for (const [what, change, differs] of table)
    assert.equal(stateKey({ ...base, ...change }) !== stateKey(base), differs, what);
});

test('diskStateReport: ISO time and age, never negative', () => {
  const at = Date.UTC(2026, 0, 2, 3, 4, 5, 600);
  assert.deepEqual(diskStateReport('peer-update', at, at + 1500), {
    diskStateSource: 'peer-update',
    diskStateUpdatedAt: '2026-01-02T03:04:05.600Z',
    diskStateAgeMs: 1500,
  });
  assert.equal(diskStateReport('none', at, at - 5).diskStateAgeMs, 0);
});

test('afterNoneDecision: a `none` handshake sends nothing unless bits are marked, and says why when it does', () => {
  const table: Array<[string, number, number, boolean, RegExp]> = [
    ['clean bitmap', 0, 0, false, /nothing marked/],
    ['clean bitmap, stale count', 0, 5, false, /nothing marked/],
    [
      'bits from before the promotion',
      200e6,
      200e6,
      true,
      /200000000 bytes .*all of it marked before this promotion/,
    ],
    ['some from before', 300, 100, true, /100 bytes of it marked before/],
    ['marked since the promotion', 4096, 0, true, /marked since this promotion/],
    ['carried count larger than the bitmap now', 4096, 8192, true, /all of it marked before/],
  ];
  for (const [what, dirty, before, resync, reason] of table) {
    const r = afterNoneDecision(dirty, before);
    assert.equal(r.resync, resync, what);
    assert.match(r.reason, reason, what);
    if (r.resync) {
      assert.equal(r.bytes, dirty, what);
      assert.match(r.reason, /same generation/, what);
    }
  }
});
