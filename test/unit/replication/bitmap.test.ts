import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  ActivityLogFile,
  ActivityLogState,
  decodeAlSlot,
  encodeAlSlot,
} from '../../../src/volume/replication/activity-log.ts';
import {
  DirtyBitmap,
  loadBitmap,
  saveBitmap,
  saveBitmapAsync,
} from '../../../src/volume/replication/bitmap.ts';

const K = 1024;

test('bitmap marks touched extents and yields coalesced, clipped ranges', () => {
  const b = new DirtyBitmap(1000 * K, 64 * K); // 16 extents, the last one short (40 KiB)
  assert.equal(b.extents, 16);
  b.markRange(0, 1); // extent 0
  b.markRange(64 * K - 1, 2); // extents 0 and 1
  b.markRange(5 * 64 * K, 64 * K); // extent 5 exactly
  b.markRange(999 * K, 1 * K); // last extent
  b.markRange(0, 0); // nothing
  assert.equal(b.dirtyExtents, 4);
  assert.deepEqual(
    [...b.dirtyRanges()],
    [
      { offset: 0, length: 128 * K },
      { offset: 320 * K, length: 64 * K },
      { offset: 960 * K, length: 40 * K },
    ],
  );
  assert.equal(b.dirtyBytes, 232 * K);
  assert.deepEqual([...b.dirtyRanges(64 * K)].length, 4);
  b.clearExtent(0);
  b.clearExtent(0);
  assert.equal(b.dirtyExtents, 3);
  const other = new DirtyBitmap(1000 * K, 64 * K);
  other.markRange(7 * 64 * K, 1);
  b.merge(other);
  assert.equal(b.dirtyExtents, 4);
  b.clearAll();
  assert.equal(b.dirtyBytes, 0);
  b.setAll();
  assert.equal(b.dirtyBytes, 1000 * K);
});

test('bitmap file: round trip; damaged or foreign file means everything dirty', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-bitmap-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'bitmap-n2');
  const b = new DirtyBitmap(1 << 20, 64 * K);
  b.markRange(3 * 64 * K, 10);
  saveBitmap(file, b);
  assert.equal(b.changedSincePersist, false);
  const loaded = loadBitmap(file, 1 << 20, 64 * K);
  assert.ok(loaded.trusted);
  assert.deepEqual([...loaded.bitmap.dirtyRanges()], [{ offset: 3 * 64 * K, length: 64 * K }]);
  assert.equal(loadBitmap(file, 2 << 20, 64 * K).trusted, false); // other geometry
  const missing = loadBitmap(join(dir, 'none'), 1 << 20, 64 * K);
  assert.equal(missing.trusted, false);
  assert.equal(missing.bitmap.dirtyBytes, 1 << 20);
  const damaged = b.serialize();
  damaged.writeUInt8(damaged.readUInt8(17) ^ 0xff, 17);
  writeFileSync(file, damaged);
  assert.equal(loadBitmap(file, 1 << 20, 64 * K).trusted, false);
});

test('activity log: commit only when the hot set grows, LRU eviction, never evicts in-flight extents', () => {
  const al = new ActivityLogState(4 * K, 2);
  assert.deepEqual(al.admit(0, 4 * K), { mustCommit: true, evicted: [] });
  // Hot but not yet durable: a second write into it waits for the commit too.
  assert.deepEqual(al.admit(100, 10), { mustCommit: true, evicted: [] });
  al.complete(100, 10);
  al.committed([0]);
  al.complete(0, 4 * K);
  assert.deepEqual(al.admit(100, 10), { mustCommit: false, evicted: [] }); // hot already
  al.complete(100, 10);
  assert.deepEqual(al.admit(4 * K, 10), { mustCommit: true, evicted: [] }); // extent 1, in flight
  al.committed([0, 1]);
  assert.deepEqual(al.admit(0, 1), { mustCommit: false, evicted: [] }); // extent 0 in flight now too
  assert.equal(al.admit(8 * K, 1), undefined); // both extents busy: wait
  al.complete(4 * K, 10);
  // extent 1 is now the only idle one
  assert.deepEqual(al.admit(8 * K, 1), { mustCommit: true, evicted: [1] });
  assert.deepEqual(al.hot, [0, 2]);
  assert.equal(al.inFlight(0), 1);
  // A write spanning two extents holds both.
  const al2 = new ActivityLogState(4 * K, 4);
  assert.deepEqual(al2.admit(4 * K - 1, 2), { mustCommit: true, evicted: [] });
  assert.deepEqual(al2.hot, [0, 1]);
  assert.deepEqual(ActivityLogState.crashRanges([3, 1], 4 * K, 14 * K), [
    { offset: 4 * K, length: 4 * K },
    { offset: 12 * K, length: 2 * K },
  ]);
});

test('activity log file: newest valid slot wins; a torn slot falls back to the other', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-al-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'activity-log');
  const first = ActivityLogFile.open(file, 8);
  assert.deepEqual(first.hot, []);
  first.log.commit(4096, [1, 2]);
  first.log.commit(4096, [2, 3, 4]);
  first.log.close();
  const again = ActivityLogFile.open(file, 8);
  assert.deepEqual(again.hot, [2, 3, 4]);
  assert.equal(again.extentSize, 4096);
  again.log.close();
  // Tear the newest slot (seq 2 lives in slot 0).
  const slot = encodeAlSlot(2, 4096, [2, 3, 4], 8);
  assert.deepEqual(decodeAlSlot(slot, 8)?.hot, [2, 3, 4]);
  slot.writeUInt8(0xee, 21);
  assert.equal(decodeAlSlot(slot, 8), undefined);

  const fd = openSync(file, 'r+');
  writeSync(fd, slot, 0, slot.length, 0);
  closeSync(fd);
  const torn = ActivityLogFile.open(file, 8);
  assert.deepEqual(torn.hot, [1, 2]);
  torn.log.close();
});

test('activity log group commit: callers during a commit share the next one, which sees their extents', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-al-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'activity-log');
  const { log } = ActivityLogFile.open(file, 8);
  let hot = [1];
  const seen: number[][] = [];
  const snap = () => {
    seen.push([...hot]);
    return { extentSize: 4096, hot: [...hot] };
  };
  let running: () => void = () => undefined;
  const isRunning = new Promise<void>((r) => {
    running = r;
  });
  let proceed: () => void = () => undefined;
  const gate = new Promise<void>((r) => {
    proceed = r;
  });
  const a = log.commitGrouped(snap, async () => {
    running();
    await gate;
  });
  const a2 = log.commitGrouped(snap); // not started yet: shares a's commit
  assert.equal(a2, a);
  await isRunning; // a's commit has taken its snapshot and is running
  hot = [1, 2];
  const b = log.commitGrouped(snap); // must wait for a later commit
  hot = [1, 2, 3];
  const c = log.commitGrouped(snap); // shares b's, which has not started
  assert.equal(b, c);
  assert.notEqual(b, a);
  proceed();
  await Promise.all([a, b, c]);
  assert.deepEqual(seen, [[1], [1, 2, 3]]);
  await log.settled();
  log.close();
  assert.deepEqual(ActivityLogFile.open(file, 8).hot, [1, 2, 3]);
});

test('saveBitmapAsync writes what loadBitmap reads', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-bm-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const b = new DirtyBitmap(1 << 24, 65536);
  b.markRange(65536 * 3, 10);
  await saveBitmapAsync(join(dir, 'bm'), b);
  assert.equal(b.changedSincePersist, false);
  const r = loadBitmap(join(dir, 'bm'), 1 << 24, 65536);
  assert.deepEqual([...r.bitmap.dirtyRanges()], [{ offset: 65536 * 3, length: 65536 }]);
});
