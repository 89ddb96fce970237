import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BEHIND_REFUSAL,
  decideHandshake,
  type HandshakeAction,
  type HandshakeFacts,
  missedWrites,
  promotionBlockedBy,
  promotionRefusal,
} from '../../../src/volume/replication/handshake.ts';
import type { PeerState } from '../../../src/volume/replication/protocol.ts';

const SIZE = 1 << 20;

function peer(p: Partial<PeerState> = {}): PeerState {
  return {
    node: 'b',
    role: 'Secondary',
    diskState: 'UpToDate',
    generation: { current: 'a1', bitmap: '0', history: [] },
    crashedPrimary: false,
    epoch: 1,
    size: SIZE,
    changedBlocks: 0,
    promotedAt: 0,
    ...p,
  };
}

function facts(f: Partial<HandshakeFacts> = {}): HandshakeFacts {
  return {
    primary: true,
    size: SIZE,
    tiebreaker: false,
    quorum: 'suspend-io',
    afterSplitBrain: 'disconnect',
    local: {
      generation: { current: 'a1', bitmap: '0', history: [] },
      diskState: 'UpToDate',
      crashedPrimary: false,
    },
    self: { node: 'a', epoch: 7 },
    localSide: { changedBlocks: 0, promotedAt: 1000, current: 'a1' },
    outOfSyncBytes: 0,
    markedBeforePromotion: 0,
    forcedSurvivor: false,
    peer: peer(),
    ...f,
  };
}

/** The action's kind, with what matters of it. */
function summary(a: HandshakeAction): string {
  switch (a.kind) {
    case 'park':
      return `park:${a.state}`;
    case 'resync':
      return `resync:${a.full ? 'full' : 'bitmap'}${a.mark.length ? `+${a.mark.length} ranges` : ''}`;
    case 'discard':
      return `discard${a.automatic ? ':automatic' : ''}`;
    default:
      return a.kind;
  }
}

const diverged = { generation: { current: 'c3', bitmap: 'a1', history: ['a1'] } };
const localWrote = {
  generation: { current: 'b2', bitmap: 'a1', history: ['a1'] },
  diskState: 'UpToDate' as const,
  crashedPrimary: false,
};

/** A peer's record of the activity-log ranges its primaries shipped (reconciliation.ts). */
const oldPrimary = { from: 'c', epoch: 6, current: [[0, 16384] as [number, number]], carried: [] };

const table: Array<[string, Partial<HandshakeFacts>, string]> = [
  ['a secondary only observes', { primary: false }, 'observe'],
  [
    'a tiebreaker only votes',
    { tiebreaker: true, peer: peer({ diskState: 'Diskless', size: 0 }) },
    'observe',
  ],
  ['a diskless peer holds nothing', { peer: peer({ diskState: 'Diskless' }) }, 'observe'],
  ['another size is refused', { peer: peer({ size: SIZE * 2 }) }, 'park:Refused'],
  [
    'a tiebreaker of another size is fine',
    { tiebreaker: true, peer: peer({ diskState: 'Diskless', size: 1 }) },
    'observe',
  ],
  ['a primary peer: retry later', { peer: peer({ role: 'Primary' }) }, 'retry'],
  ['same generation, nothing marked', {}, 'none'],
  [
    'same generation, bits marked: resent',
    { outOfSyncBytes: 65536, markedBeforePromotion: 65536 },
    'resync:bitmap',
  ],
  ['we wrote since: bitmap resync from here', { local: localWrote }, 'resync:bitmap'],
  [
    'the peer wrote since: it is newer, refused',
    { peer: peer({ generation: localWrote.generation }) },
    'park:Refused',
  ],
  ['an Inconsistent peer gets a full sync', { peer: peer({ diskState: 'Inconsistent' }) }, 'resync:full'],
  [
    'a new peer gets a full sync',
    { peer: peer({ generation: { current: '0', bitmap: '0', history: [] } }) },
    'resync:full',
  ],
  [
    'a crashed old primary: its activity-log extents resync from here',
    {
      peer: peer({
        crashedPrimary: true,
        crashRanges: [
          [0, 4096],
          [65536, 8192],
        ],
      }),
    },
    'resync:bitmap+2 ranges',
  ],
  [
    "same generation, the peer holds a lost primary's activity ranges: reconciled from here",
    { peer: peer({ activity: oldPrimary }) },
    'resync:bitmap+1 ranges',
  ],
  [
    'same generation, the peer holds our own ranges of this term: none (our bitmap covers them)',
    { peer: peer({ activity: { ...oldPrimary, from: 'a', epoch: 7 } }) },
    'none',
  ],
  [
    'our own ranges of an earlier term: reconciled (we may have crashed since)',
    { peer: peer({ activity: { ...oldPrimary, from: 'a', epoch: 5 } }) },
    'resync:bitmap+1 ranges',
  ],
  [
    'our own ranges of this term, and ranges carried from an earlier primary: the carried ones',
    {
      peer: peer({
        activity: {
          ...oldPrimary,
          from: 'a',
          epoch: 7,
          carried: [
            [65536, 16384],
            [1 << 19, 4096],
          ],
        },
      }),
    },
    'resync:bitmap+2 ranges',
  ],
  [
    "we wrote since, and the peer holds a lost primary's ranges: bitmap + ranges",
    { local: localWrote, peer: peer({ activity: oldPrimary }) },
    'resync:bitmap+1 ranges',
  ],
  [
    "a lost primary's ranges past the end are cut to the device",
    { peer: peer({ activity: { ...oldPrimary, current: [[SIZE - 4096, 16384]] } }) },
    'resync:bitmap+1 ranges',
  ],
  [
    "a lost primary's ranges and an Inconsistent peer: full sync",
    { peer: peer({ diskState: 'Inconsistent', activity: oldPrimary }) },
    'resync:full',
  ],
  [
    "a crashed old primary with a lost primary's ranges too: both",
    {
      peer: peer({
        crashedPrimary: true,
        crashRanges: [[0, 4096]],
        activity: { ...oldPrimary, current: [[65536, 4096]] },
      }),
    },
    'resync:bitmap+2 ranges',
  ],
  [
    'a crashed old primary without its extents: full sync',
    { peer: peer({ crashedPrimary: true }) },
    'resync:full',
  ],
  [
    'a crashed old primary with extents past the end: full sync',
    { peer: peer({ crashedPrimary: true, crashRanges: [[SIZE, 4096]] }) },
    'resync:full',
  ],
  ['split-brain, policy disconnect: parked', { local: localWrote, peer: peer(diverged) }, 'park:SplitBrain'],
  [
    'split-brain with an Outdated (fenced) old primary under quorum: discarded',
    { local: localWrote, peer: peer({ ...diverged, diskState: 'Outdated' }) },
    'discard:automatic',
  ],
  [
    'split-brain with a crashed old primary under quorum: discarded',
    { local: localWrote, peer: peer({ ...diverged, crashedPrimary: true }) },
    'discard:automatic',
  ],
  [
    'split-brain with a fenced old primary, quorum off: parked',
    { quorum: 'off', local: localWrote, peer: peer({ ...diverged, diskState: 'Outdated' }) },
    'park:SplitBrain',
  ],
  [
    'split-brain, the operator chose this side',
    { forcedSurvivor: true, local: localWrote, peer: peer(diverged) },
    'discard',
  ],
  [
    'split-brain, discard-zero-changes and the peer changed nothing',
    {
      afterSplitBrain: 'discard-zero-changes',
      localSide: { changedBlocks: 3, promotedAt: 1000, current: 'b2' },
      local: localWrote,
      peer: peer({ ...diverged, changedBlocks: 0 }),
    },
    'discard',
  ],
  [
    'split-brain, discard-zero-changes and we changed nothing: parked (we are the loser)',
    {
      afterSplitBrain: 'discard-zero-changes',
      localSide: { changedBlocks: 0, promotedAt: 1000, current: 'b2' },
      local: localWrote,
      peer: peer({ ...diverged, changedBlocks: 5 }),
    },
    'park:SplitBrain',
  ],
  [
    'unrelated data',
    { peer: peer({ generation: { current: 'ff', bitmap: '0', history: [] } }) },
    'park:Unrelated',
  ],
  [
    'nobody holds good data',
    { local: { ...localWrote, diskState: 'Inconsistent' }, peer: peer({ diskState: 'Inconsistent' }) },
    'park:Refused',
  ],
];

for (const [name, f, expected] of table) {
  test(`handshake: ${name} -> ${expected}`, () => {
    assert.equal(summary(decideHandshake(facts(f))), expected);
  });
}

// Before a promotion: does a reachable peer forbid it (it holds newer or diverged data)?
const local = {
  generation: { current: 'a1', bitmap: '0', history: [] },
  diskState: 'UpToDate' as const,
  crashedPrimary: false,
};
const noRecord = { current: '0', bitmap: '0', history: [] };
const promotionTable: Array<[string, Partial<PeerState>, boolean]> = [
  ['a peer on our generation', {}, false],
  ['a peer that wrote since (tracked in its bitmap)', { generation: localWrote.generation }, true],
  [
    'an old primary that crashed on our generation: only unacknowledged writes in its log',
    { crashedPrimary: true, crashRanges: [[0, 4096]] },
    false,
  ],
  [
    'an old primary that crashed after writing without us',
    { crashedPrimary: true, generation: localWrote.generation },
    true,
  ],
  [
    'an Outdated (fenced) peer that wrote since',
    { diskState: 'Outdated', generation: localWrote.generation },
    false,
  ],
  ['a diverged peer', diverged, true],
  ['unrelated data', { generation: { current: 'ff', bitmap: '0', history: [] } }, true],
  ['an Inconsistent peer', { diskState: 'Inconsistent' }, false],
  // What a peer witnessed of a primary's data (a tiebreaker, a replica resyncing, any other).
  ['a tiebreaker that witnessed nothing', { diskState: 'Diskless' }, false],
  ['a tiebreaker that witnessed "0"', { diskState: 'Diskless', witnessed: noRecord }, false],
  [
    'a tiebreaker that witnessed our generation',
    { diskState: 'Diskless', witnessed: local.generation },
    false,
  ],
  [
    "a tiebreaker that witnessed a primary's writes without us",
    { diskState: 'Diskless', witnessed: localWrote.generation },
    true,
  ],
  [
    'a tiebreaker that witnessed diverged data',
    { diskState: 'Diskless', witnessed: diverged.generation },
    true,
  ],
  [
    'a tiebreaker that witnessed unrelated data',
    { diskState: 'Diskless', witnessed: { current: 'z0', bitmap: '0', history: [] } },
    true,
  ],
  [
    "a replica resyncing (Inconsistent) that witnessed a primary's writes without us",
    { diskState: 'Inconsistent', witnessed: localWrote.generation },
    true,
  ],
  [
    'a replica whose resync did not finish, which held newer data before it',
    { diskState: 'Inconsistent', generation: localWrote.generation },
    true,
  ],
  [
    'a replica whose resync did not finish, which held our data before it',
    { diskState: 'Inconsistent' },
    false,
  ],
  [
    'an Outdated old primary that witnessed writes without us before it was fenced',
    { diskState: 'Outdated', witnessed: localWrote.generation },
    true,
  ],
];
for (const [name, p, blocked] of promotionTable) {
  test(`promotion: ${name} -> ${blocked ? 'refused' : 'allowed'}`, () => {
    const why = promotionBlockedBy(local, peer(p));
    assert.equal(why !== undefined, blocked, why);
  });
}

test('promotion: a tiebreaker that witnessed an older generation of ours -> allowed', () => {
  // We wrote since (a primary with every data peer in sync while the tiebreaker was away).
  const why = promotionBlockedBy(localWrote, peer({ diskState: 'Diskless', witnessed: local.generation }));
  assert.equal(why, undefined);
});

test('missedWrites: own record of a newer generation forbids, an older or equal one does not', () => {
  assert.match(missedWrites(local, localWrote.generation) ?? '', /may lack acknowledged writes/);
  assert.equal(missedWrites(localWrote, local.generation), undefined);
  assert.equal(missedWrites(local, local.generation), undefined);
  assert.equal(missedWrites(local, undefined), undefined);
});

test('every refusal for a replica behind matches BEHIND_REFUSAL (the agent reports it not up to date)', () => {
  for (const p of [
    { generation: localWrote.generation },
    { diskState: 'Diskless' as const, witnessed: localWrote.generation },
    { diskState: 'Inconsistent' as const, generation: localWrote.generation },
  ])
    assert.match(promotionBlockedBy(local, peer(p)) ?? '', BEHIND_REFUSAL);
  assert.match(promotionRefusal({ ...local, witnessed: localWrote.generation }, []) ?? '', BEHIND_REFUSAL);
});

test('promotionRefusal: its own record, then each reachable peer; nothing against it -> allowed', () => {
  assert.match(
    promotionRefusal({ ...local, witnessed: localWrote.generation }, [peer()]) ?? '',
    /^this replica witnessed newer data/,
  );
  assert.match(
    promotionRefusal(local, [
      peer(),
      peer({ node: 'tb', diskState: 'Diskless', witnessed: localWrote.generation }),
    ]) ?? '',
    /^peer tb witnessed newer data/,
  );
  assert.equal(promotionRefusal({ ...local, witnessed: local.generation }, [peer()]), undefined);
  assert.equal(promotionRefusal(local, []), undefined);
});
