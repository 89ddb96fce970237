/**
 * The snapshot store on real files (a temporary directory): copies in batches, and what a crash
 * can leave of the copies file — cut at every byte of the last batch's writes, in either order,
 * and truncated at every byte of its records and every page after — reads back as a map
 * that holds exactly the chunks whose old contents are on disk, and reopens.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  blockMapOfFile,
  COPIES_FILE,
  encodeV1Map,
  RECORD_SIZE,
  SNAPSHOT_INFO_FILE,
  type SnapshotInfo,
  slotOffset,
  V1_COW_FILE,
  V1_MAP_FILE,
} from '../../../src/volume/snapshot/format.ts';
import { SnapshotStore } from '../../../src/volume/snapshot/store.ts';

const CHUNK = 64 * 1024;
const CHUNKS = 64;
const SIZE = CHUNK * CHUNKS;

function infoFor(name: string, formatVersion: 1 | 2 = 2): SnapshotInfo {
  return {
    formatVersion,
    name,
    volumeUuid: randomUUID(),
    size: SIZE,
    chunkSize: CHUNK,
    createdAt: new Date().toISOString(),
  };
}

function tmp(t: { after: (f: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cvs-snapstore-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The old contents of every chunk (what the volume held when the snapshot was taken). */
const old = Array.from({ length: CHUNKS }, () => randomBytes(CHUNK));

/** Every chunk the map holds reads back as its old contents; `mustHold` are held. */
function checkImage(file: Buffer, mustHold: readonly number[], what: string): { held: number; bad: number } {
  const { map, bad } = blockMapOfFile(file, SIZE, CHUNK);
  for (let c = 0; c < CHUNKS; c++) {
    const slot = map.slots[c]!;
    if (slot < 0) continue;
    const at = slotOffset(slot, CHUNK);
    assert.ok(
      file.subarray(at, at + CHUNK).equals(old[c]!),
      `${what}: chunk ${c} from slot ${slot} is its old contents`,
    );
  }
  for (const c of mustHold) assert.notEqual(map.slots[c], -1, `${what}: chunk ${c} (acknowledged) is held`);
  return { held: map.copied, bad: bad.length };
}

function padTo(b: Buffer, n: number): Buffer {
  return b.length >= n ? b : Buffer.concat([b, Buffer.alloc(n - b.length)]);
}

test('copies in batches: one fdatasync per batch; a restart loads the same map', async (t) => {
  const root = tmp(t);
  const info = infoFor('s1');
  let store = await SnapshotStore.create(join(root, 's1'), info);
  await store.append(3, old[3]!);
  // One write's chunks, handed over together: one batch.
  await Promise.all([5, 6, 7, 8].map((c) => store.append(c, old[c]!)));
  assert.deepEqual(store.stats, { batches: 2, copies: 5 });
  const buf = Buffer.alloc(CHUNK);
  await store.readSlot(store.map.slots[6]!, 0, CHUNK, buf, 0);
  assert.ok(buf.equals(old[6]!));
  await store.close();
  store = await SnapshotStore.open(join(root, 's1'), { uuid: info.volumeUuid, size: SIZE });
  assert.equal(store.map.copied, 5);
  assert.equal(store.map.nextSlot, 5);
  await store.readSlot(store.map.slots[8]!, 100, 50, buf, 0);
  assert.ok(buf.subarray(0, 50).equals(old[8]!.subarray(100, 150)));
  await store.close();
});

test('a crash at any point of the last batch: the map holds exactly what reached the disk, and reopens', async (t) => {
  const root = tmp(t);
  const info = infoFor('s2');
  const dir = join(root, 's2');
  const store = await SnapshotStore.create(dir, info);
  const acknowledged = [1, 2, 3];
  for (const c of acknowledged) await store.append(c, old[c]!);
  const before = readFileSync(join(dir, COPIES_FILE));
  await Promise.all([10, 11, 12].map((c) => store.append(c, old[c]!)));
  await store.close();
  const whole = readFileSync(join(dir, COPIES_FILE));
  // Past the batch's last slot the file holds only zeros: the images end there.
  const end = slotOffset(5, CHUNK) + CHUNK;
  const after = whole.subarray(0, end);
  const base = padTo(before, whole.length).subarray(0, end);
  let changed = 0;
  for (let i = 0; i < after.length; i++) if (base[i] !== after[i]) changed++;
  assert.ok(changed > 3 * CHUNK * 0.9, 'the batch wrote three slots and their records');
  // The disk may keep any part of an unfinished batch: here, its bytes before offset p (records
  // first) or from p on (data first), for p at every byte of the records, at every 512-byte
  // sector of the data, and beside each sector boundary in each slot's first and last page.
  const cuts: number[] = [];
  for (let p = 0; p <= after.length; p++) {
    const inSlot = (p - 4096) % CHUNK;
    const edge = inSlot <= 4096 || inSlot >= CHUNK - 4096;
    if (p < 8 * RECORD_SIZE || p % 512 === 0 || (edge && [1, 511].includes(p % 512))) cuts.push(p);
  }
  const seen = new Set<string>();
  for (const p of cuts)
    for (const order of ['records first', 'data first'] as const) {
      const image =
        order === 'records first'
          ? Buffer.concat([after.subarray(0, p), base.subarray(p)])
          : Buffer.concat([base.subarray(0, p), after.subarray(p)]);
      const r = checkImage(image, acknowledged, `${order}, cut at ${p}`);
      seen.add(`${r.held}/${r.bad}`);
    }
  // Some cuts keep a record whose data is torn: that record is found and not used.
  assert.ok(
    [...seen].some((s) => !s.endsWith('/0')),
    `a torn slot was caught: ${[...seen]}`,
  );
  assert.ok(seen.has('3/0') && seen.has('6/0'), `none and all of the batch: ${[...seen]}`);

  // Truncated at every byte of the records and at every page after them.
  for (let n = 0; n <= after.length; n += n < 8 * RECORD_SIZE ? 1 : 4096)
    checkImage(
      padTo(after.subarray(0, n), n),
      n >= after.length ? [...acknowledged, 10, 11, 12] : [],
      `cut at ${n}`,
    );

  // Reopened from a crash that kept the records but tore the data of slot 4 (chunk 11): its
  // record is erased on disk, and new copies work and survive another restart.
  const torn = Buffer.from(whole);
  const at4 = slotOffset(4, CHUNK);
  torn.fill(0, at4 + 4096, at4 + CHUNK);
  writeFileSync(join(dir, COPIES_FILE), torn);
  const volume = { uuid: info.volumeUuid, size: SIZE };
  let again = await SnapshotStore.open(dir, volume);
  assert.equal(again.map.slots[11], -1, 'the torn copy is not used');
  assert.notEqual(again.map.slots[10], -1);
  assert.notEqual(again.map.slots[12], -1);
  assert.equal(
    blockMapOfFile(readFileSync(join(dir, COPIES_FILE)), SIZE, CHUNK).bad.length,
    0,
    'erased on disk',
  );
  await again.append(11, old[11]!);
  await again.close();
  again = await SnapshotStore.open(dir, volume);
  assert.equal(again.map.copied, 6);
  checkImage(readFileSync(join(dir, COPIES_FILE)), [...acknowledged, 10, 11, 12], 'after the second restart');
  await again.close();
});

test('a format-1 snapshot (cow + map) is converted when loaded, same contents', async (t) => {
  const root = tmp(t);
  const dir = join(root, 'v1');
  mkdirSync(dir);
  const info = infoFor('v1', 1);
  writeFileSync(join(dir, SNAPSHOT_INFO_FILE), JSON.stringify(info));
  const held = [
    { slot: 0, chunk: 7 },
    { slot: 1, chunk: 2 },
    { slot: 2, chunk: 40 },
  ];
  const cow = Buffer.alloc(3 * CHUNK);
  for (const h of held) old[h.chunk]!.copy(cow, h.slot * CHUNK);
  writeFileSync(join(dir, V1_COW_FILE), cow);
  writeFileSync(join(dir, V1_MAP_FILE), encodeV1Map(CHUNK, held));
  const store = await SnapshotStore.open(dir, { uuid: info.volumeUuid, size: SIZE });
  assert.equal(store.info.formatVersion, 2);
  assert.equal(store.map.copied, 3);
  checkImage(readFileSync(join(dir, COPIES_FILE)), [7, 2, 40], 'converted');
  await store.append(9, old[9]!);
  await store.close();
  assert.equal(JSON.parse(readFileSync(join(dir, SNAPSHOT_INFO_FILE), 'utf8')).formatVersion, 2);
  checkImage(readFileSync(join(dir, COPIES_FILE)), [7, 2, 40, 9], 'converted, then a copy');
});
