/**
 * End to end in a real lab: two full nodes and a witness (losing the witness moves nothing, losing the
 * demo's full node fails it over), and a health failure inside the demo (httpd, its PID 1, killed):
 * restarted in place first, then relocated (the manager's policy: max_restarts 1).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { eventsMatching, run, showEvents, sleep, TestLab, until } from '../helpers/lab.ts';

test('two full nodes and a witness: losing the witness changes nothing, losing the demo node fails it over', async (t) => {
  const lab = await TestLab.up(t, { letter: 'f', witness: true });
  assert.deepEqual(lab.nodes, ['n1', 'n2', 'w']);
  const before = await lab.demoHealthy(60_000);
  // The manager keeps etcd's leader off the witness when a full node runs nothing (leader-placement.ts):
  // losing the witness then costs no etcd election, which with the lab's 2 s TTL can fence a node.
  const led = await until(
    "etcd's leader on the idle full node",
    async () => {
      const at = await lab.etcdLeader();
      return at && at !== 'w' && at !== before.node ? at : undefined;
    },
    20_000,
  );
  t.diagnostic(`etcd leader on ${led}, demo on ${before.node}`);
  const killAt = Date.now();
  await lab.kill('w');
  await sleep(8000);
  const events = await lab.events();
  const now = await lab.whereIsDemo();
  assert.deepEqual(
    [now.node, now.epoch, now.status],
    [before.node, before.epoch, 'healthy'],
    showEvents(events, killAt),
  );
  assert.deepEqual(
    eventsMatching(events, /^demo: (assign|start|restart|stop)/, killAt),
    [],
    showEvents(events, killAt),
  );

  await lab.start('w');
  await until(
    'the witness alive again',
    async () => (await lab.status()).nodes.find((n) => n.name === 'w')?.lease === 'alive',
    30_000,
  );
  await lab.kill(before.node);
  const after = await lab.demoHealthy(60_000, before.node);
  assert.equal(after.node, before.node === 'n1' ? 'n2' : 'n1');
  assert.ok(after.epoch > before.epoch);
});

/** Kills the demo's PID 1 (httpd) on `node` from the host, found through the node's crun state. */
async function killHttpd(lab: TestLab, node: string): Promise<number> {
  const r = await run('crun', ['--root', join(lab.dir, 'nodes', node, 'crun'), 'state', 'demo']);
  assert.equal(r.status, 0, `crun state demo on ${node}: ${r.stderr}`);
  const { pid, status } = JSON.parse(r.stdout) as { pid: number; status: string };
  assert.equal(status, 'running');
  process.kill(pid, 'SIGKILL');
  return pid;
}

// A restart in place keeps the volume primary (same epoch): a re-promotion with it would be refused.
test('health failure in the demo (httpd killed): restarted in place, then relocated', async (t) => {
  const lab = await TestLab.up(t, { letter: 'g' });
  const first = await lab.demoHealthy(60_000);
  const t1 = Date.now();
  await killHttpd(lab, first.node);
  const restartRe = /^demo: (re)?start with epoch \d+ \(restart 1 requested\)/;
  await until(
    `the demo restarted on ${first.node}`,
    async () => eventsMatching(await lab.events(), restartRe, t1, first.node).length > 0,
    20_000,
  );
  const again = await lab.demoHealthy(60_000);
  let events = await lab.events();
  assert.equal(again.node, first.node, `restarted in place:\n${showEvents(events, t1)}`);
  assert.ok(
    eventsMatching(events, /^demo: restart on .*health check failed \(restart 1 of 1\)/, t1).length,
    showEvents(events, t1),
  );

  const t2 = Date.now();
  await killHttpd(lab, first.node);
  const moved = await lab.demoHealthy(60_000, first.node);
  events = await lab.events();
  const log = showEvents(events, t1);
  t.diagnostic(log);
  assert.ok(eventsMatching(events, /relocating \(relocation 1 of 1\)/, t2).length, log);
  assert.ok(moved.epoch > again.epoch, log);
  assert.deepEqual(eventsMatching(events, restartRe, t2), [], `no second restart in place:\n${log}`);
});
