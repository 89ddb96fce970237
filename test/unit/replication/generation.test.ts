import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  adoptSourceGeneration,
  clearBitmapGeneration,
  decideSync,
  type Generation,
  type GenerationView,
  type Relation,
  randomGenerationId,
  relate,
  resolveSplitBrain,
  type SplitBrainResolution,
  type SyncDecision,
  startNewGeneration,
} from '../../../src/volume/replication/generation.ts';

function v(
  current: string,
  bitmap = '0',
  history: string[] = [],
  extra: Partial<GenerationView> = {},
): GenerationView {
  return { generation: { current, bitmap, history }, diskState: 'UpToDate', crashedPrimary: false, ...extra };
}

type Expect = SyncDecision['kind'] | `${'bitmap' | 'full'}:${'local' | 'peer'}`;
function summary(d: SyncDecision): Expect {
  return d.kind === 'bitmap' || d.kind === 'full' ? `${d.kind}:${d.source}` : d.kind;
}
function mirror(e: Expect): Expect {
  return e.replace(':local', ':X').replace(':peer', ':local').replace(':X', ':peer') as Expect;
}

const table: Array<[string, GenerationView, GenerationView, Expect]> = [
  ['both new', v('0'), v('0'), 'none'],
  ['same current', v('a1'), v('a1'), 'none'],
  [
    'same current, local crashed primary',
    v('a1', '0', [], { crashedPrimary: true }),
    v('a1'),
    'bitmap:local',
  ],
  [
    'same current, both crashed primary',
    v('a1', '0', [], { crashedPrimary: true }),
    v('a1', '0', [], { crashedPrimary: true }),
    'split-brain',
  ],
  ['peer new/wiped', v('a1'), v('0'), 'full:local'],
  ['local wrote while peer away', v('b2', 'a1', []), v('a1'), 'bitmap:local'],
  ['local wrote twice while peer away', v('c3', 'a1', ['b2']), v('a1'), 'bitmap:local'],
  ['peer away, local history further back, bitmap lost', v('c3', '0', ['b2', 'a1']), v('a1'), 'full:local'],
  ['peer is an old bitmap-less ancestor', v('c3', 'b2', ['a1']), v('a1'), 'full:local'],
  ['split-brain: both rotated from same base', v('b2', 'a1'), v('c3', 'a1'), 'split-brain'],
  ['split-brain: common ancestor deeper', v('d4', 'b2', ['a1']), v('c3', 'a1'), 'split-brain'],
  ['split-brain: common history only', v('d4', '0', ['b2', 'a1']), v('e5', '0', ['c3', 'a1']), 'split-brain'],
  ['unrelated data', v('b2', 'a1'), v('d4', 'c3'), 'unrelated'],
  ['unrelated, no bitmaps', v('b2'), v('d4'), 'unrelated'],
  ['peer Inconsistent', v('b2', 'a1'), v('a1', '0', [], { diskState: 'Inconsistent' }), 'full:local'],
  [
    'both Inconsistent',
    v('a1', '0', [], { diskState: 'Inconsistent' }),
    v('a1', '0', [], { diskState: 'Inconsistent' }),
    'no-source',
  ],
  ['peer diskless tiebreaker', v('a1'), v('0', '0', [], { diskState: 'Diskless' }), 'none'],
  ['peer Outdated but same data', v('a1'), v('a1', '0', [], { diskState: 'Outdated' }), 'none'],
  ['peer Outdated and behind', v('b2', 'a1'), v('a1', '0', [], { diskState: 'Outdated' }), 'bitmap:local'],
];

test('decideSync table, both directions', () => {
  for (const [name, local, peer, expected] of table) {
    assert.equal(summary(decideSync(local, peer)), expected, name);
    assert.equal(summary(decideSync(peer, local)), mirror(expected), `${name} (mirrored)`);
  }
});

test('rotation rules drive the decisions through a realistic history', () => {
  const id = () => randomGenerationId(randomBytes);
  // A and B start in sync on a first generation.
  let a: Generation = { current: id(), bitmap: '0', history: [] };
  let b: Generation = { ...a };
  const view = (g: Generation): GenerationView => ({
    generation: g,
    diskState: 'UpToDate',
    crashedPrimary: false,
  });
  assert.equal(decideSync(view(a), view(b)).kind, 'none');
  // B goes away; A (primary) writes: new current, bitmap names B's data.
  a = startNewGeneration(a, id());
  assert.equal(summary(decideSync(view(a), view(b))), 'bitmap:local');
  // B comes back and is synced: it adopts A's generation; A clears its bitmap id.
  b = adoptSourceGeneration(b, a);
  a = clearBitmapGeneration(a);
  assert.equal(summary(decideSync(view(a), view(b))), 'none');
  // They part again and both are made primary alone: split-brain.
  const a2 = startNewGeneration(a, id());
  const b2 = startNewGeneration(b, id());
  assert.equal(summary(decideSync(view(a2), view(b2))), 'split-brain');
  // Resolution: B discarded, synced from A.
  const b3 = adoptSourceGeneration(b2, a2);
  assert.equal(summary(decideSync(view(a2), view(b3))), 'none');
  // A primary that rotates twice while the peer is away still has the bitmap against the peer.
  // (Without clearing the bitmap id after the sync, the old one would still name an older generation.)
  assert.equal(summary(decideSync(view(startNewGeneration(a2, id())), view(b3))), 'full:local');
  const a3 = startNewGeneration(startNewGeneration(clearBitmapGeneration(a2), id()), id());
  assert.equal(summary(decideSync(view(a3), view(b3))), 'bitmap:local');
  assert.throws(() => startNewGeneration(a3, '0'));
});

test('random generation ids are 16 hex digits and never 0', () => {
  assert.match(randomGenerationId(randomBytes), /^[0-9a-f]{16}$/);
  let calls = 0;
  const id = randomGenerationId((n) => (calls++ === 0 ? Buffer.alloc(n) : Buffer.alloc(n, 1)));
  assert.equal(id, '0101010101010101');
});

test('after-split-brain policies are symmetric', () => {
  const cases: Array<[Parameters<typeof resolveSplitBrain>[0], number, number, number, number, string]> = [
    ['disconnect', 0, 10, 1, 2, 'disconnect'],
    ['discard-zero-changes', 0, 10, 1, 2, 'local'],
    ['discard-zero-changes', 5, 10, 0, 2, 'peer'],
    ['discard-zero-changes', 5, 10, 7, 2, 'disconnect'],
    ['discard-younger-primary', 5, 20, 7, 10, 'local'],
    ['discard-younger-primary', 5, 10, 7, 10, 'disconnect'],
    ['discard-least-changes', 5, 20, 7, 10, 'local'],
    ['discard-least-changes', 7, 20, 7, 10, 'disconnect'],
  ];
  const who = (r: SplitBrainResolution) => (r.kind === 'discard' ? r.loser : 'disconnect');
  for (const [policy, lc, lp, pc, pp, expected] of cases) {
    const l = { changedBlocks: lc, promotedAt: lp, current: 'aa' };
    const p = { changedBlocks: pc, promotedAt: pp, current: 'bb' };
    assert.equal(who(resolveSplitBrain(policy, l, p)), expected, policy);
    const mirrored = expected === 'local' ? 'peer' : expected === 'peer' ? 'local' : expected;
    assert.equal(who(resolveSplitBrain(policy, p, l)), mirrored, `${policy} mirrored`);
  }
  // Both unchanged: both sides agree on the same loser.
  const l = { changedBlocks: 0, promotedAt: 1, current: 'aa' };
  const p = { changedBlocks: 0, promotedAt: 2, current: 'bb' };
  assert.equal(who(resolveSplitBrain('discard-zero-changes', l, p)), 'local');
  assert.equal(who(resolveSplitBrain('discard-zero-changes', p, l)), 'peer');
});

// relate(): what a witnessed generation says of a replica's data (handshake.ts, missedWrites).
const g = (current: string, bitmap = '0', history: string[] = []): Generation => ({
  current,
  bitmap,
  history,
});
const relations: Array<[string, Generation, Generation, Relation]> = [
  ['the same data', g('a1'), g('a1'), 'same'],
  ['other is our bitmap generation (we wrote since)', g('b2', 'a1', ['a1']), g('a1'), 'newer'],
  ['other is an old one of ours (history)', g('c3', '0', ['b2', 'a1']), g('a1'), 'newer'],
  ['we are its bitmap generation (it wrote since)', g('a1'), g('b2', 'a1', ['a1']), 'older'],
  ['we are in its history', g('a1'), g('c3', '0', ['b2', 'a1']), 'older'],
  ['both moved on from a1', g('b2', 'a1', ['a1']), g('c3', 'a1', ['a1']), 'diverged'],
  [
    'it rotated twice from our own older generation (same bitmap)',
    g('d4', 'a1', ['c3', 'a1']),
    g('c3', 'a1', ['a1']),
    'newer',
  ],
  ['nothing shared (or aged out of the history)', g('a1'), g('z9', '0', ['y8']), 'unrelated'],
];
for (const [name, local, other, expected] of relations)
  test(`relate: ${name} -> ${expected}`, () => {
    assert.equal(relate(local, other), expected);
    const back = { newer: 'older', older: 'newer' } as Record<Relation, Relation>;
    assert.equal(relate(other, local), back[expected] ?? expected, 'antisymmetric');
  });
