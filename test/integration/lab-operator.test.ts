/**
 * End to end in a real lab, the operator's commands: standby of the demo's node while a client writes
 * (the demo moves, nothing acknowledged is lost; unstandby does not move it back without failback),
 * and maintenance (a power cut while on moves nothing and the log says why; off: the manager acts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventsMatching, showEvents, sleep, TestLab, until, Writer } from '../helpers/lab.ts';

test('standby of the demo node while a client writes: the demo moves, zero lost; unstandby leaves it', async (t) => {
  const lab = await TestLab.up(t, { letter: 'k' });
  const demo = await lab.demoHealthy(60_000);
  const other = lab.nodes.find((n) => n !== demo.node)!;
  const writer = new Writer(lab.demoUrl, 'standby').start();
  t.after(() => writer.stop());
  await sleep(1500);

  const began = Date.now();
  const r = await lab.exec(
    other,
    ['node', 'standby', demo.node, '--wait', '--timeout', '90', '--json'],
    120_000,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as { moved: string[] }).moved, ['demo']);
  const moved = await lab.demoHealthy(30_000, demo.node);
  assert.ok(moved.epoch > demo.epoch);
  const status = await lab.status();
  assert.ok(status.nodes.find((n) => n.name === demo.node)?.standby, 'status shows the standby');

  const u = await lab.exec(other, ['node', 'unstandby', demo.node]);
  assert.equal(u.status, 0, u.stderr);
  await sleep(5000);
  await writer.stop();
  const events = await lab.events();
  const log = showEvents(events, began);
  t.diagnostic(log);
  assert.equal(
    eventsMatching(events, new RegExp(`^${demo.node}: standby on, by \\S+ on ${other}`), began).length,
    1,
    log,
  );
  assert.equal(eventsMatching(events, new RegExp(`^${demo.node}: standby off`), began).length, 1, log);
  const after = await lab.whereIsDemo();
  assert.deepEqual(
    [after.node, after.epoch],
    [moved.node, moved.epoch],
    `no move back without failback:\n${log}`,
  );
  assert.deepEqual(writer.lost(await lab.records()), [], 'no acknowledged record lost');
  assert.ok(writer.ackedAfter(began).length > 10, 'the client kept writing');
});

test('maintenance on, then a power cut: nothing moves and the log says why; off: the manager recovers', async (t) => {
  const lab = await TestLab.up(t, { letter: 'l' });
  const demo = await lab.demoHealthy(60_000);
  const other = lab.nodes.find((n) => n !== demo.node)!;
  const on = await lab.exec(other, ['maintenance', 'on']);
  assert.equal(on.status, 0, on.stderr);
  assert.ok((await lab.status(other)).maintenance, 'status shows maintenance');

  const cutAt = Date.now();
  await lab.kill(demo.node);
  await until(
    'the manager noting the demo is left as it is',
    async () =>
      eventsMatching(await lab.events(), /^demo: .* left as it is \(maintenance: no action\)/, cutAt).length >
        0 || undefined,
    30_000,
  );
  await sleep(4000);
  let events = await lab.events();
  assert.deepEqual(eventsMatching(events, /^demo: (assign|start)/, cutAt), [], showEvents(events, cutAt));
  assert.equal((await lab.whereIsDemo()).node, demo.node, 'still assigned to the dead node');

  const offAt = Date.now();
  const off = await lab.exec(other, ['maintenance', 'off']);
  assert.equal(off.status, 0, off.stderr);
  const back = await lab.demoHealthy(60_000, demo.node);
  assert.ok(back.epoch > demo.epoch);
  events = await lab.events();
  t.diagnostic(showEvents(events, cutAt));
  assert.equal(eventsMatching(events, /^maintenance off: resuming/, offAt).length, 1);
});
