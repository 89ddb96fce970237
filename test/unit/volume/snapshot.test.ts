import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planDown, type VolumeObservation } from '../../../src/volume/plan.ts';
import {
  decodeBlockMap,
  encodeMapHeader,
  encodeMapRecord,
  MAP_RECORD_SIZE,
  mapRecordOffset,
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

test('block map: records round-trip; torn, zero and bad-CRC records are unused slots', () => {
  const size = 10 * 64 * K;
  const file = Buffer.alloc(mapRecordOffset(5));
  encodeMapHeader(64 * K).copy(file, 0);
  encodeMapRecord(0, 3).copy(file, mapRecordOffset(0));
  // slot 1 never written (zeros)
  encodeMapRecord(2, 9).copy(file, mapRecordOffset(2));
  const bad = encodeMapRecord(3, 4);
  bad[5] = (bad[5] ?? 0) ^ 0xff;
  bad.copy(file, mapRecordOffset(3));
  encodeMapRecord(4, 3).copy(file, mapRecordOffset(4)); // chunk 3 again: its first copy wins
  const torn = Buffer.concat([file, encodeMapRecord(5, 1).subarray(0, MAP_RECORD_SIZE - 3)]);
  const map = decodeBlockMap(torn, size, 'map');
  assert.equal(map.slots[3], 0);
  assert.equal(map.slots[9], 2);
  assert.equal(map.slots[4], -1);
  assert.equal(map.slots[1], -1);
  assert.equal(map.copied, 2);
  assert.equal(map.nextSlot, 5);
  assert.throws(() => decodeBlockMap(Buffer.alloc(16), size, '/x/map'), /\/x\/map: not a snapshot block map/);
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
