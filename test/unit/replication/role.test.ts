import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  admitPeerWrite,
  admitWrite,
  demote,
  diskStateWhenFenced,
  mustStartGeneration,
  observeEpoch,
  type PeerView,
  promote,
  quorum,
  type ReplicaRoleState,
  setPeer,
  stepDown,
} from '../../../src/volume/replication/role.ts';

const peer = (id: string, connection: PeerView['connection'], extra: Partial<PeerView> = {}): PeerView => ({
  id,
  tiebreaker: false,
  connection,
  diskState: 'UpToDate',
  role: 'Secondary',
  ...extra,
});

function three(c2: PeerView['connection'], c3: PeerView['connection']): ReplicaRoleState {
  return {
    role: 'Secondary',
    diskState: 'UpToDate',
    epoch: 5,
    fenced: false,
    quorumPolicy: 'suspend-io',
    peers: [peer('n2', c2), peer('n3', c3)],
  };
}

test('quorum is a majority of voters including self and the tiebreaker', () => {
  assert.equal(quorum(three('Connected', 'StandAlone')).hasQuorum, true);
  assert.equal(quorum(three('Connecting', 'StandAlone')).hasQuorum, false);
  assert.equal(quorum(three('Handshaking', 'SplitBrain')).hasQuorum, false); // not through the handshake
  assert.equal(quorum(three('SyncTarget', 'Connecting')).hasQuorum, true);
  const two: ReplicaRoleState = { ...three('StandAlone', 'StandAlone'), peers: [peer('n2', 'StandAlone')] };
  assert.equal(quorum(two).hasQuorum, false); // 1 of 2: no majority
  const withTb = setPeer(two, peer('tb', 'Connected', { tiebreaker: true, diskState: 'Diskless' }));
  assert.deepEqual(quorum(withTb), { voters: 3, reachable: 2, needed: 2, hasQuorum: true });
  assert.equal(quorum({ ...two, quorumPolicy: 'off' }).hasQuorum, true);
});

test('promotion needs a strictly higher epoch, UpToDate disk, quorum and no other primary', () => {
  const s = three('Connected', 'StandAlone');
  const ok = promote(s, 6);
  assert.ok(ok.ok && ok.next.role === 'Primary' && ok.next.epoch === 6);
  assert.match(String(!promote(s, 5).ok && (promote(s, 5) as { reason: string }).reason), /not higher/);
  assert.equal(promote(s, 4).ok, false);
  assert.equal(promote(s, Number.NaN).ok, false);
  assert.equal(promote(three('Connecting', 'StandAlone'), 9).ok, false);
  assert.equal(promote({ ...s, diskState: 'Outdated' }, 9).ok, false);
  assert.equal(promote({ ...s, diskState: 'Inconsistent' }, 9).ok, false);
  assert.equal(promote(setPeer(s, peer('n2', 'Connected', { role: 'Primary' })), 9).ok, false);
  // Promoting again with the same epoch is idempotent.
  if (ok.ok) assert.equal(promote(ok.next, 6).ok, true);
  if (ok.ok) assert.equal(demote(ok.next).ok && demote(ok.next).ok, true);
});

test('write admission: proceed, suspend or EIO on quorum loss, EROFS when secondary, EIO when fenced', () => {
  const p = promote(three('Connected', 'Connected'), 6);
  assert.ok(p.ok);
  if (!p.ok) return;
  assert.deepEqual(admitWrite(p.next), { kind: 'proceed' });
  const lost = setPeer(setPeer(p.next, peer('n2', 'Connecting')), peer('n3', 'StandAlone'));
  assert.equal(admitWrite(lost).kind, 'suspend');
  assert.deepEqual(
    { ...admitWrite({ ...lost, quorumPolicy: 'io-error' }), reason: '' },
    { kind: 'fail', errno: 'EIO', reason: '' },
  );
  assert.equal(admitWrite({ ...lost, quorumPolicy: 'off' }).kind, 'proceed');
  const oneLeft = setPeer(p.next, peer('n3', 'StandAlone'));
  assert.equal(admitWrite(oneLeft).kind, 'proceed'); // 2 of 3
  assert.equal(admitWrite(three('Connected', 'Connected')).kind, 'fail');
  const fenced = observeEpoch(p.next, 7);
  assert.equal(fenced.fenced, true);
  assert.deepEqual({ ...admitWrite(fenced), reason: '' }, { kind: 'fail', errno: 'EIO', reason: '' });
});

test('secondaries refuse writes from an older epoch and follow newer ones', () => {
  let s = three('Connected', 'Connected');
  assert.deepEqual(admitPeerWrite(s, 5), { accept: true });
  s = observeEpoch(s, 8);
  assert.equal(s.epoch, 8);
  assert.equal(s.fenced, false);
  assert.deepEqual(admitPeerWrite(s, 7), { accept: false, reason: 'stale-epoch' });
  assert.deepEqual(admitPeerWrite(s, 8), { accept: true });
  assert.equal(observeEpoch(s, 3), s);
  const p = promote(s, 9);
  assert.ok(p.ok);
  if (p.ok) assert.deepEqual(admitPeerWrite(p.next, 9), { accept: false, reason: 'not-secondary' });
});

test('a new data generation only for a write some data peer misses, and only with quorum', () => {
  const cases: Array<[string, { rotated: boolean; allInSync: boolean; hasQuorum: boolean }, boolean]> = [
    ['every peer in sync: the name stays', { rotated: false, allInSync: true, hasQuorum: true }, false],
    ['a peer behind, quorum: new name', { rotated: false, allInSync: false, hasQuorum: true }, true],
    ['already renamed since the peer left', { rotated: true, allInSync: false, hasQuorum: true }, false],
    // full seed 13: an old primary cut from the majority renamed its data on a write that failed
    // for want of quorum, then looked diverged from the next primary's replicas (a false split-brain).
    [
      'a peer behind, no quorum: nothing will be acknowledged',
      { rotated: false, allInSync: false, hasQuorum: false },
      false,
    ],
  ];
  for (const [name, f, want] of cases) assert.equal(mustStartGeneration(f), want, name);
});

test('a step-down is clean only when no write failed after it could reach this disk', () => {
  const clean = { flushed: true, fenced: false, inFlight: 0, localSynced: true, unacknowledgedLocal: false };
  const cases: Array<
    [string, Partial<typeof clean>, { shipEmptyActivity: boolean; clearPrimaryOpen: boolean }]
  > = [
    ['clean', {}, { shipEmptyActivity: true, clearPrimaryOpen: true }],
    ['fenced: peers keep its ranges', { fenced: true }, { shipEmptyActivity: false, clearPrimaryOpen: true }],
    ['writes in flight', { inFlight: 2 }, { shipEmptyActivity: false, clearPrimaryOpen: true }],
    ['flush failed', { flushed: false }, { shipEmptyActivity: false, clearPrimaryOpen: true }],
    ['local disk not synced', { localSynced: false }, { shipEmptyActivity: true, clearPrimaryOpen: false }],
    [
      'a write failed after reaching this disk (quorum lost): resynced from the next primary as after a crash',
      { unacknowledgedLocal: true },
      { shipEmptyActivity: false, clearPrimaryOpen: false },
    ],
  ];
  for (const [name, f, want] of cases) assert.deepEqual(stepDown({ ...clean, ...f }), want, name);
});

test('a fenced primary stores its disk Outdated at once (a kill before its demote keeps that)', () => {
  assert.equal(diskStateWhenFenced('UpToDate'), 'Outdated');
  assert.equal(diskStateWhenFenced('Outdated'), 'Outdated');
  assert.equal(diskStateWhenFenced('Inconsistent'), 'Inconsistent', 'no better than what it was');
});
