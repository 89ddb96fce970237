import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApplyQueue } from '../../../src/volume/replication/apply-queue.ts';

/** An operation that finishes when the test says so, recording start and end. */
function gate(log: string[], name: string) {
  let open: () => void = () => undefined;
  const done = new Promise<void>((r) => {
    open = r;
  });
  return {
    op: async () => {
      log.push(`start ${name}`);
      await done;
      log.push(`end ${name}`);
    },
    open: () => open(),
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test('non-overlapping writes run concurrently; an overlapping later one waits', async () => {
  const q = new ApplyQueue();
  const log: string[] = [];
  const a = gate(log, 'a');
  const b = gate(log, 'b');
  const c = gate(log, 'c');
  const pa = q.submit({ offset: 0, length: 4096 }, a.op);
  const pb = q.submit({ offset: 8192, length: 4096 }, b.op);
  const pc = q.submit({ offset: 4095, length: 2 }, c.op); // overlaps a only
  await tick();
  assert.deepEqual(log, ['start a', 'start b']);
  b.open();
  await pb;
  assert.deepEqual(log, ['start a', 'start b', 'end b']);
  a.open();
  await pa;
  await tick();
  assert.deepEqual(log.slice(-2), ['end a', 'start c']);
  c.open();
  await pc;
  await q.idle();
  await tick();
  assert.equal(q.inFlight, 0);
});

test('a barrier waits for everything before it; later writes do not wait for the barrier unless they overlap one waiting on it', async () => {
  const q = new ApplyQueue();
  const log: string[] = [];
  const a = gate(log, 'a');
  const f = gate(log, 'flush');
  const pa = q.submit({ offset: 0, length: 4096 }, a.op);
  const pf = q.submit(undefined, f.op);
  await tick();
  assert.deepEqual(log, ['start a']);
  a.open();
  await pa;
  await tick();
  assert.deepEqual(log, ['start a', 'end a', 'start flush']);
  // A write after the barrier depends on it (a barrier spans everything).
  const w = gate(log, 'w');
  const pw = q.submit({ offset: 0, length: 4096 }, w.op);
  await tick();
  assert.ok(!log.includes('start w'));
  f.open();
  await pf;
  await tick();
  assert.ok(log.includes('start w'));
  w.open();
  await pw;
});

test('a failed operation does not block later ones, and its own promise rejects', async () => {
  const q = new ApplyQueue();
  const bad = q.submit({ offset: 0, length: 10 }, async () => {
    throw new Error('EIO');
  });
  const after = q.submit({ offset: 0, length: 10 }, async () => 'ok');
  await assert.rejects(bad, /EIO/);
  assert.equal(await after, 'ok');
  await q.idle();
  await tick();
  assert.equal(q.inFlight, 0);
});

test('a FLUSH-like barrier (holdsLater: false) waits for earlier writes but does not hold later ones', async () => {
  const q = new ApplyQueue();
  const log: string[] = [];
  const a = gate(log, 'a');
  const f = gate(log, 'flush');
  const pa = q.submit({ offset: 0, length: 4096 }, a.op);
  const pf = q.submit(undefined, f.op, { holdsLater: false });
  const w = gate(log, 'w');
  const pw = q.submit({ offset: 0, length: 4096 }, w.op); // overlaps a: waits for a, not for the flush
  await tick();
  assert.deepEqual(log, ['start a']);
  a.open();
  await pa;
  await tick();
  assert.ok(log.includes('start flush') && log.includes('start w'));
  w.open();
  await pw;
  assert.ok(!log.includes('end flush'));
  f.open();
  await pf;
});
