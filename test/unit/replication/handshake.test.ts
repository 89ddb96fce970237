import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decideHandshake,
  type HandshakeAction,
  type HandshakeFacts,
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
      return `discard${a.fencedPeer ? ':fenced' : ''}`;
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
    'discard:fenced',
  ],
  [
    'split-brain with a crashed old primary under quorum: discarded',
    { local: localWrote, peer: peer({ ...diverged, crashedPrimary: true }) },
    'discard:fenced',
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
