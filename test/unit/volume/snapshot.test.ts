import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planDown, type VolumeObservation } from '../../../src/volume/plan.ts';
import {
  decodeRecords,
  encodeRecord,
  MAX_BATCH,
  RECORD_BLOCK_SIZE,
  RECORD_SIZE,
  recordOffset,
  recordsToCheck,
  recoverBlockMap,
  SLOTS_PER_SEGMENT,
  segmentSize,
  slotOffset,
} from '../../../src/volume/snapshot/format.ts';
import { chunkRange, planCopies, planRead, planRollback } from '../../../src/volume/snapshot/plan.ts';

const K = 1024;
const slots = (n: number, held: Record<number, number>) => {
  const s = new Int32Array(n).fill(-1);
  for (const [c, slot] of Object.entries(held)) s[Number(c)] = slot;
  return s;
};

test('chunkRange: the chunks a write touches', () => {
  assert.deepEqual(chunkRange(0, 4096, 64 * K), { first: 0, last: 0 });
  assert.deepEqual(chunkRange(64 * K - 4096, 8192, 64 * K), { first: 0, last: 1 });
  assert.deepEqual(chunkRange(128 * K, 64 * K, 64 * K), { first: 2, last: 2 });
});

test('planCopies: each snapshot gets the chunks it does not hold yet', () => {
  const a = { name: 'a', slots: slots(4, { 1: 0 }) };
  const b = { name: 'b', slots: slots(4, { 1: 0, 2: 1 }) };
  assert.deepEqual(planCopies(0, 2, [a, b]), [
    { chunk: 0, into: ['a', 'b'] },
    { chunk: 2, into: ['a'] },
  ]);
  assert.deepEqual(planCopies(1, 1, [a, b]), []);
});

test('planRead: held chunks from their slots, the rest from the live volume, neighbours merged', () => {
  const segs = planRead(4096, 3 * 64 * K, 64 * K, slots(5, { 1: 7 }));
  assert.deepEqual(segs, [
    { from: 'live', offset: 4096, length: 64 * K - 4096, at: 0, firstChunk: 0, lastChunk: 0 },
    { from: 'cow', slot: 7, within: 0, length: 64 * K, at: 64 * K - 4096 },
    { from: 'live', offset: 128 * K, length: 64 * K + 4096, at: 128 * K - 4096, firstChunk: 2, lastChunk: 3 },
  ]);
});

test('planRollback: every held chunk, merged up to the limit; the last chunk clipped to the size', () => {
  assert.deepEqual(planRollback(slots(4, { 0: 0, 1: 1, 3: 2 }), 64 * K, 200 * K, 1024 * K), [
    { offset: 0, length: 128 * K },
    { offset: 192 * K, length: 8 * K },
  ]);
  assert.deepEqual(planRollback(slots(3, { 0: 0, 1: 1, 2: 2 }), 64 * K, 192 * K, 128 * K), [
    { offset: 0, length: 128 * K },
    { offset: 128 * K, length: 64 * K },
  ]);
});

test('records: round-trip; zero, torn, corrupt and misplaced records are unused; the first copy of a chunk wins', () => {
  const size = 10 * 64 * K;
  const blocks = Buffer.alloc(2 * RECORD_BLOCK_SIZE);
  const put = (slot: number, rec: Buffer) => rec.copy(blocks, slot * RECORD_SIZE);
  put(0, encodeRecord(0, 3, 111));
  // slot 1 never written (zeros)
  put(2, encodeRecord(2, 9, 222));
  const bad = encodeRecord(3, 4, 333);
  bad[5] = (bad[5] ?? 0) ^ 0xff;
  put(3, bad);
  put(4, encodeRecord(4, 3, 444)); // chunk 3 again: its first copy wins
  put(5, encodeRecord(6, 1, 555)); // written at slot 5's place but names slot 6
  put(6, encodeRecord(6, 10, 666)); // chunk 10 is past the volume's end
  put(7, encodeRecord(7, 5, 777).subarray(0, RECORD_SIZE - 3)); // torn
  put(SLOTS_PER_SEGMENT + 1, encodeRecord(SLOTS_PER_SEGMENT + 1, 7, 888)); // segment 1's block
  const records = decodeRecords(blocks, 10);
  assert.deepEqual(
    records.map((r) => [r.slot, r.chunk, r.dataCrc]),
    [
      [0, 3, 111],
      [2, 9, 222],
      [4, 3, 444],
      [SLOTS_PER_SEGMENT + 1, 7, 888],
    ],
  );
  const map = recoverBlockMap(records, new Set([2]), size, 64 * K);
  assert.equal(map.slots[3], 0);
  assert.equal(map.slots[9], -1, 'a slot whose data failed its check is unused');
  assert.equal(map.slots[7], SLOTS_PER_SEGMENT + 1);
  assert.equal(map.copied, 2);
  assert.equal(map.nextSlot, SLOTS_PER_SEGMENT + 2, 'new copies go after every recorded slot');
});

test('recordsToCheck: the slots of the last batch a crash may have cut, no others', () => {
  const recs = [0, 5, 100, 100 + MAX_BATCH - 1, 100 + MAX_BATCH].map((slot) => ({
    slot,
    chunk: slot,
    dataCrc: 0,
  }));
  assert.deepEqual(
    recordsToCheck(recs).map((r) => r.slot),
    [100 + MAX_BATCH - 1, 100 + MAX_BATCH],
  );
  assert.deepEqual(recordsToCheck([]), []);
});

test('layout: a segment is a record block then 256 slots', () => {
  assert.equal(recordOffset(0, 64 * K), 0);
  assert.equal(slotOffset(0, 64 * K), RECORD_BLOCK_SIZE);
  assert.equal(recordOffset(SLOTS_PER_SEGMENT + 2, 64 * K), segmentSize(64 * K) + 2 * RECORD_SIZE);
  assert.equal(
    slotOffset(SLOTS_PER_SEGMENT + 2, 64 * K),
    segmentSize(64 * K) + RECORD_BLOCK_SIZE + 2 * 64 * K,
  );
});

test('down releases mounted snapshots before the volume', () => {
  const o: VolumeObservation = {
    daemonAlive: true,
    fuseMounted: true,
    loops: ['/dev/loop3'],
    fsMounts: [{ loop: '/dev/loop3', dir: '/srv/web' }],
    snapshotDevices: [
      {
        snapshot: 's1',
        fuseDir: '/v/snapshots/s1/fuse',
        deviceFile: '/v/snapshots/s1/fuse/device',
        fuseMounted: true,
        loops: ['/dev/loop4'],
        fsMounts: [{ loop: '/dev/loop4', dir: '/mnt/s1' }],
      },
    ],
  };
  assert.deepEqual(planDown(o), [
    { kind: 'unmount-fs', dir: '/mnt/s1' },
    { kind: 'detach-loop', loop: '/dev/loop4', file: '/v/snapshots/s1/fuse/device' },
    { kind: 'unmount-snapshot-fuse', dir: '/v/snapshots/s1/fuse' },
    { kind: 'unmount-fs', dir: '/srv/web' },
    { kind: 'detach-loop', loop: '/dev/loop3' },
    { kind: 'unmount-fuse' },
    { kind: 'wait-daemon-exit' },
  ]);
});
