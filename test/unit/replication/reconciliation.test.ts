import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ReceivedActivity } from '../../../src/volume/replication/received-activity.ts';
import {
  type ActivityRecord,
  activityReport,
  decodeActivitySlot,
  encodeActivitySlot,
  MAX_RANGES,
  mergeRanges,
  NO_ACTIVITY,
  promotionMarks,
  type Range,
  receiveActivity,
  reconciledByPrimary,
  reconcileMarks,
} from '../../../src/volume/replication/reconciliation.ts';
import { DirStateFiles } from '../../../src/volume/replication/state-files.ts';
import { configFor, Simulation } from '../../sim/replication/simulation.ts';

const K = 1024;
const c = { node: 'c', epoch: 6 };
const a = { node: 'a', epoch: 7 };

test('mergeRanges: sorted, joined when touching, bounded by joining the smallest gaps', () => {
  assert.deepEqual(
    mergeRanges([
      [8 * K, 4 * K],
      [0, 4 * K],
      [4 * K, 2 * K],
      [20 * K, 0],
    ]),
    [
      [0, 6 * K],
      [8 * K, 4 * K],
    ],
  );
  assert.deepEqual(
    mergeRanges(
      [
        [0, 1],
        [10, 1],
        [100, 1],
        [103, 1],
      ],
      2,
    ),
    [
      [0, 11],
      [100, 4],
    ],
  );
  const many: Range[] = Array.from({ length: 1000 }, (_, i) => [i * 3 * K, K]);
  const bounded = mergeRanges(many);
  assert.equal(bounded.length, MAX_RANGES);
  for (const [o, l] of many)
    assert.ok(
      bounded.some(([bo, bl]) => bo <= o && o + l <= bo + bl),
      'nothing lost',
    );
});

// What a secondary records as primaries ship their activity-log ranges to it.
const receive: Array<[string, ActivityRecord, () => ActivityRecord, ActivityRecord]> = [
  [
    'the first ranges of a primary',
    NO_ACTIVITY,
    () => receiveActivity(NO_ACTIVITY, c, [[0, 4 * K]]),
    { from: c, current: [[0, 4 * K]], carried: [] },
  ],
  [
    'the same primary again: replaced (its log evicted an extent whose writes all completed)',
    { from: c, current: [[0, 4 * K]], carried: [] },
    () => receiveActivity({ from: c, current: [[0, 4 * K]], carried: [] }, c, [[8 * K, 4 * K]]),
    { from: c, current: [[8 * K, 4 * K]], carried: [] },
  ],
  [
    "a new primary: the old one's ranges are carried",
    { from: c, current: [[0, 4 * K]], carried: [] },
    () => receiveActivity({ from: c, current: [[0, 4 * K]], carried: [] }, a, []),
    { from: a, current: [], carried: [[0, 4 * K]] },
  ],
  [
    'the same node in a new term is a new primary',
    { from: c, current: [[0, 4 * K]], carried: [] },
    () => receiveActivity({ from: c, current: [[0, 4 * K]], carried: [] }, { node: 'c', epoch: 9 }, []),
    { from: { node: 'c', epoch: 9 }, current: [], carried: [[0, 4 * K]] },
  ],
  [
    'writes not yet durable here stay recorded (a crash here may lose them)',
    NO_ACTIVITY,
    () => receiveActivity(NO_ACTIVITY, c, [[0, 4 * K]], [[64 * K, 512]]),
    {
      from: c,
      current: [
        [0, 4 * K],
        [64 * K, 512],
      ],
      carried: [],
    },
  ],
  [
    'reconciled by a primary: nothing carried any more',
    { from: a, current: [[0, 4 * K]], carried: [[8 * K, 4 * K]] },
    () => reconciledByPrimary({ from: a, current: [[0, 4 * K]], carried: [[8 * K, 4 * K]] }, a),
    { from: a, current: [[0, 4 * K]], carried: [] },
  ],
  [
    "reconciled by a primary that shipped nothing yet: the earlier one's current ranges are done too",
    { from: c, current: [[0, 4 * K]], carried: [[8 * K, 4 * K]] },
    () => reconciledByPrimary({ from: c, current: [[0, 4 * K]], carried: [[8 * K, 4 * K]] }, a),
    { from: c, current: [], carried: [] },
  ],
];
for (const [name, , run, expected] of receive) {
  test(`received activity: ${name}`, () => {
    assert.deepEqual(run(), expected);
  });
}

// What a primary marks out of sync for a peer, from the peer's report (see also handshake.test.ts).
const marks: Array<[string, ActivityRecord, Range[]]> = [
  ['nothing recorded', NO_ACTIVITY, []],
  ["an earlier primary's ranges", { from: c, current: [[0, 4 * K]], carried: [] }, [[0, 4 * K]]],
  ['our own of this term: our bitmap covers them', { from: a, current: [[0, 4 * K]], carried: [] }, []],
  [
    'our own of this term and carried ones: the carried ones',
    { from: a, current: [[0, 4 * K]], carried: [[8 * K, 4 * K]] },
    [[8 * K, 4 * K]],
  ],
  [
    'beyond the device: cut to it',
    { from: c, current: [[1020 * K, 8 * K]], carried: [] },
    [[1020 * K, 4 * K]],
  ],
];
for (const [name, rec, expected] of marks) {
  test(`reconcile marks: ${name}`, () => {
    assert.deepEqual(reconcileMarks(a, activityReport(rec), 1024 * K), expected);
  });
}

test('promotion marks: everything recorded, current and carried', () => {
  assert.deepEqual(
    promotionMarks({
      from: c,
      current: [[0, 4 * K]],
      carried: [
        [4 * K, 4 * K],
        [32 * K, K],
      ],
    }),
    [
      [0, 8 * K],
      [32 * K, K],
    ],
  );
  assert.equal(activityReport(NO_ACTIVITY), undefined, 'an empty record is not reported');
});

test('the record on disk: newest valid slot wins, a torn slot falls back, each change durable in order', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-activity-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const files = new DirStateFiles(dir);
  const r = new ReceivedActivity(files);
  assert.deepEqual(r.record, NO_ACTIVITY);
  await r.receive(c, [[0, 4 * K]]);
  await r.receive(a, [[8 * K, 4 * K]]);
  r.close();
  const again = new ReceivedActivity(files);
  assert.deepEqual(again.record, { from: a, current: [[8 * K, 4 * K]], carried: [[0, 4 * K]] });
  await again.reconciled(a);
  await again.clear();
  again.close();
  assert.deepEqual(new ReceivedActivity(files).record, NO_ACTIVITY);

  const slot = encodeActivitySlot(5, { from: c, current: [[0, 512]], carried: [] });
  assert.deepEqual(decodeActivitySlot(slot), { seq: 5, rec: { from: c, current: [[0, 512]], carried: [] } });
  slot[40] = slot[40]! ^ 0xff;
  assert.equal(decodeActivitySlot(slot), undefined, 'a torn slot is refused');
});

// The seeds of the ci simulation that found the divergence (replicas differing while connected and
// idle after a primary crashed with writes on the wire): replayed as regression cases.
for (const [seed, before] of [
  [7, 'step 1039: n3 vs n1: block 44: 265 vs 325 (no reconciliation)'],
  [29, 'step 1507: n3 vs n1: block 4: 471 vs 430 (a second write into an extent not yet committed)'],
  [
    176,
    'step 1358: n1 vs n2: block 0: 340 vs 145 (the same activity-log race, re-introduced on the final code)',
  ],
] as const) {
  test(`simulation seed ${seed} (failed before: ${before})`, async () => {
    const r = await new Simulation(configFor(seed, 2000, 'ci')).run();
    assert.equal(r.violation, undefined, `${r.violation?.kind}: ${r.violation?.detail}`);
    assert.ok((r.faults['crash-primary-mid-write'] ?? 0) > 0);
  });
}

// Seeds of the full profile (partitions, a hung agent, replicas without durable writes), each replayed
// whole: safety must hold for all 2000 steps; the run may end without a primary for a reason the engine
// states (counted, not failed). See the notes, session 8, for what each found.
for (const [seed, before] of [
  [
    13,
    'step 381: split-brain with quorum on (an old primary cut from the majority renamed its data on a write that failed for want of quorum); then, as it was fixed, step 1549 replicas differ (a promotion over its own unclean extents without a new name) and step 1684 an in-sync replica lacking an acknowledged write (received unflushed, lost when it crashed as the next primary)',
  ],
  [
    10,
    "step 569 / 1669: replicas differ (a failed write's extent left the activity log, so neither the old primary's crash ranges nor the survivors' records named it)",
  ],
  [
    14,
    'step 1693: primary serves stale data (an old primary acknowledged with itself and a tiebreaker whose link had not timed out; the tiebreaker had voted for the new primary)',
  ],
  [
    114,
    "replicas differ at 08ec1a4 without the late reconciliation (a hung agent's old primary shipped ranges to a replica after the new primary's handshake with it: they resync when its STATE brings them)",
  ],
  [155, 'replicas differ at 08ec1a4 without the late reconciliation (the same)'],
  [
    34,
    'replicas differ at 79e0815 when an unclean step-down (a write failed after reaching the disk) clears primaryOpen (stepDown)',
  ],
  [
    5,
    "no primary after settling: a hung agent's old primary renamed and wrote with itself and a tiebreaker that had voted for the new primary without learning its epoch",
  ],
  // Session 9: the model promotes as the manager does (any live replica whose disk says UpToDate).
  [
    1,
    'primary serves stale data: a replica cut from the primary while both reached the tiebreaker was promoted by its vote over the writes it missed (no witnessed generations)',
  ],
  [
    16,
    'primary serves stale data: a replica that was down promoted by the vote of one still resyncing (Inconsistent), which had the writes',
  ],
  [
    71,
    "primary serves stale data: a flush acknowledged without a peer whose link dropped with the flush's writes unflushed there, and no new generation to say so",
  ],
  [
    75,
    'split-brain with quorum on: a new generation acknowledged before an in-sync peer had adopted it (its STATE still on the wire)',
  ],
  [
    78,
    'split-brain with quorum on: an old primary renamed its data, then lost its quorum before any acknowledgement (resolved by lastAcked)',
  ],
] as const) {
  test(`simulation full seed ${seed} (failed before: ${before})`, async () => {
    const r = await new Simulation(configFor(seed, 2000, 'full')).run();
    assert.equal(r.violation, undefined, `${r.violation?.kind}: ${r.violation?.detail}`);
    // 155 ends without a primary (a stated split-brain) since the tiebreaker learns epochs.
    if (seed !== 155) assert.equal(r.stuck, undefined, 'converged, with a primary');
    assert.equal(r.steps, 2000);
  });
}
