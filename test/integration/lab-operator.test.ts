/**
 * End to end in one real lab (shared: each step starts from where the previous one left the demo, which
 * is all each needs), the operator's side of the cluster:
 *  1. the agent of the demo's node SIGKILLed (as systemd would see a crash) and started again at once,
 *     within its lease: it continues the lease and adopts the running demo — same container (PID 1
 *     unchanged), same epoch — and a client writing to the demo sees no error;
 *  2. standby of the demo's node while the client writes: the demo moves, nothing acknowledged is lost;
 *     unstandby does not move it back without failback;
 *  3. maintenance on, then a power cut of the demo's node: nothing moves and the log says why; off: the
 *     manager recovers the demo elsewhere.
 * The lease is 5 s: a restarted agent must renew it before the guard's deadline (lease minus a quarter
 * second here), and a loaded test machine can take two seconds to start a Node process.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { eventsMatching, showEvents, sleep, TestLab, until, Writer } from '../helpers/lab.ts';

async function containerPid(lab: TestLab, node: string): Promise<number> {
  const r = await lab.exec(node, ['vserver', 'status', 'demo', '--json']);
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { pid: number }).pid;
}

test('operator: agent restart adopts, standby moves with zero lost, maintenance holds through a power cut', async (t) => {
  const lab = await TestLab.up(t, { letter: 'k', leaseTtl: 5 });
  const writer = new Writer(lab.demoUrl, 'op').start();
  t.after(() => writer.stop());

  await t.test(
    'agent SIGKILLed and started again within its lease: the demo is adopted, not restarted',
    async () => {
      const demo = await lab.demoHealthy(60_000);
      const pid1 = await containerPid(lab, demo.node);
      await sleep(1500);
      const agent = Number.parseInt(readFileSync(join(lab.runDir(demo.node), 'agent.pid'), 'utf8'), 10);
      const failuresBefore = writer.failures;
      const killAt = Date.now();
      process.kill(agent, 'SIGKILL');
      await lab.restartAgent(demo.node);
      await until(
        `the new agent on ${demo.node} adopting the demo`,
        async () =>
          eventsMatching(await lab.events(), /^demo: adopted/, killAt, demo.node).length > 0 || undefined,
        20_000,
      );
      await sleep(5000);
      const events = await lab.events();
      const log = showEvents(events, killAt);
      t.diagnostic(log);
      const now = await lab.whereIsDemo();
      assert.deepEqual([now.node, now.epoch, now.status], [demo.node, demo.epoch, 'healthy'], log);
      assert.equal(await containerPid(lab, demo.node), pid1, `the container was not restarted:\n${log}`);
      assert.deepEqual(eventsMatching(events, /^demo: (assign|start|restart|stop)/, killAt), [], log);
      assert.deepEqual(eventsMatching(events, /^fence/, killAt), [], log);
      assert.equal(
        writer.failures,
        failuresBefore,
        `the client saw no error (longest gap ${writer.longestGap()} ms)`,
      );
      assert.ok(writer.ackedAfter(killAt).length > 20, 'the client kept writing');
    },
  );

  await t.test(
    'standby of the demo node while the client writes: the demo moves, zero lost; unstandby leaves it',
    async () => {
      const demo = await lab.demoHealthy(60_000);
      const other = lab.nodes.find((n) => n !== demo.node)!;
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
      assert.ok(writer.ackedAfter(began).length > 10, 'the client kept writing');
      assert.deepEqual(writer.lost(await lab.records()), [], 'no acknowledged record lost');
    },
  );

  await t.test(
    'maintenance on, then a power cut: nothing moves and the log says why; off: the manager recovers',
    async () => {
      await writer.stop();
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
          eventsMatching(await lab.events(), /^demo: .* left as it is \(maintenance: no action\)/, cutAt)
            .length > 0 || undefined,
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
    },
  );
});
