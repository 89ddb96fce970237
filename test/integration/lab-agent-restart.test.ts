/**
 * End to end in a real lab: the agent of the demo's node is SIGKILLed (as systemd would see a crash)
 * and started again at once, while its lease is still valid: the new agent continues the lease and
 * adopts the running demo — same container (PID 1 unchanged), same epoch — and the client writing to
 * the demo sees no error and loses nothing.
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

test('agent SIGKILLed and started again within its lease: the running demo is adopted, not restarted', async (t) => {
  // A 5 s lease: the new agent must be up and renewing before the guard's deadline (lease minus a
  // quarter second here), and a loaded test machine can take two seconds to start a Node process.
  const lab = await TestLab.up(t, { letter: 'j', leaseTtl: 5 });
  const demo = await lab.demoHealthy(60_000);
  const pid1 = await containerPid(lab, demo.node);
  const writer = new Writer(lab.demoUrl, 'adopt').start();
  t.after(() => writer.stop());
  await sleep(1500);

  const agent = Number.parseInt(readFileSync(join(lab.runDir(demo.node), 'agent.pid'), 'utf8'), 10);
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
  await writer.stop();

  const events = await lab.events();
  const log = showEvents(events, killAt);
  t.diagnostic(log);
  const now = await lab.whereIsDemo();
  assert.deepEqual([now.node, now.epoch, now.status], [demo.node, demo.epoch, 'healthy'], log);
  assert.equal(await containerPid(lab, demo.node), pid1, `the container was not restarted:\n${log}`);
  assert.deepEqual(eventsMatching(events, /^demo: (assign|start|restart|stop)/, killAt), [], log);
  assert.deepEqual(eventsMatching(events, /^fence/, killAt), [], log);
  assert.equal(writer.failures, 0, `the client saw no error (longest gap ${writer.longestGap()} ms)`);
  assert.ok(writer.ackedAfter(killAt).length > 20, 'the client kept writing');
  assert.deepEqual(writer.lost(await lab.records()), []);
});
