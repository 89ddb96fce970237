/**
 * End to end in a real lab: a hung agent (SIGSTOP) and a dead agent (SIGKILL) on the demo's node are
 * covered by the independent guard (it kills the container and the volume daemon at the deadline), the
 * demo comes back elsewhere and a resumed agent starts no second copy; the manager's node dying hands
 * the manager role over without restarting anything.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { eventsMatching, showEvents, sleep, TestLab, until } from '../helpers/lab.ts';

interface GuardEntry {
  time: string;
  event: string;
  containers?: { name: string; pids: number[] }[];
  volumes?: { name: string; pid: number | null }[];
}

function guardFences(lab: TestLab, node: string, since: number): GuardEntry[] {
  let text = '';
  try {
    text = readFileSync(join(lab.runDir(node), 'guard.log'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as GuardEntry)
    .filter((e) => e.event === 'fenced' && Date.parse(e.time) >= since);
}

function agentPid(lab: TestLab, node: string): number {
  return Number.parseInt(readFileSync(join(lab.runDir(node), 'agent.pid'), 'utf8'), 10);
}

async function guardFencedDemo(lab: TestLab, node: string, since: number): Promise<GuardEntry> {
  const f = await until(
    `the guard on ${node} fencing the demo`,
    () => guardFences(lab, node, since).find((e) => e.containers?.some((c) => c.name === 'demo')),
    20_000,
  );
  assert.ok(
    f.volumes?.some((v) => v.name === 'demo'),
    `the guard stopped the demo's volume too: ${JSON.stringify(f)}`,
  );
  return f;
}

test('agent hung (SIGSTOP) then dead (SIGKILL) on the demo node: the guard fences, the demo comes back elsewhere, no second copy', async (t) => {
  const lab = await TestLab.up(t, { letter: 'd' });
  const first = await lab.demoHealthy(60_000);
  const pid = agentPid(lab, first.node);
  const stopAt = Date.now();
  process.kill(pid, 'SIGSTOP');
  t.after(() => {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {}
  });
  lab.away.add(first.node);
  await guardFencedDemo(lab, first.node, stopAt);
  const second = await lab.demoHealthy(60_000, first.node);
  assert.ok(second.epoch > first.epoch);

  const contAt = Date.now();
  process.kill(pid, 'SIGCONT');
  lab.away.delete(first.node);
  const events = await until(
    `${first.node} noticing it lost its lease or fenced`,
    async () => {
      const ev = await lab.events();
      return eventsMatching(ev, /^(fence|lease lost)|lease .* expired/, stopAt, first.node).length
        ? ev
        : undefined;
    },
    20_000,
  );
  await sleep(4000);
  const all = await lab.events();
  const log = showEvents(all, stopAt);
  t.diagnostic(log);
  assert.ok(events.length > 0);
  assert.deepEqual(
    eventsMatching(all, /^demo: (start|restart|running) with epoch/, contAt, first.node),
    [],
    `no second copy:\n${log}`,
  );
  const local = await lab.exec(first.node, ['vserver', 'status', 'demo', '--json']);
  assert.notEqual((JSON.parse(local.stdout) as { state: string }).state, 'running', log);
  const still = await lab.whereIsDemo();
  assert.deepEqual([still.node, still.epoch], [second.node, second.epoch], log);

  // The same with the agent on the new node killed outright: nothing restarts it, the guard fences.
  const pid2 = agentPid(lab, second.node);
  const killAt = Date.now();
  process.kill(pid2, 'SIGKILL');
  lab.away.add(second.node);
  await guardFencedDemo(lab, second.node, killAt);
  const third = await lab.demoHealthy(60_000, second.node);
  assert.ok(third.epoch > second.epoch);
});

test('the manager node dies: another node takes over as manager, the demo is not restarted', async (t) => {
  const lab = await TestLab.up(t, { letter: 'e' });
  let demo = await lab.demoHealthy(60_000);
  const manager = await until('a manager', async () => (await lab.status()).manager, 10_000);
  if (manager === demo.node) {
    const to = lab.nodes.find((n) => n !== manager)!;
    const r = await lab.exec(to, ['migrate', 'demo', to, '--json'], 90_000);
    assert.equal(r.status, 0, r.stderr);
    demo = await lab.demoHealthy(60_000);
  }
  assert.notEqual(demo.node, manager);
  // The manager keeps etcd's leader off its own node and the demo's (leader-placement.ts): the cut then
  // costs no etcd election on top of the manager's (with the lab's 2 s TTL, one under load can make the
  // demo's node miss renewals for long enough to fence itself).
  const placed = await until(
    "etcd's leader off the manager's and the demo's nodes",
    async () => {
      const at = await lab.etcdLeader();
      return at && at !== manager && at !== demo.node ? at : undefined;
    },
    20_000,
  );
  t.diagnostic(`etcd leader on ${placed}, manager on ${manager}, demo on ${demo.node}`);
  const killAt = Date.now();
  await lab.kill(manager);
  const next = await until(
    'a new manager',
    async () => {
      const m = (await lab.status()).manager;
      return m && m !== manager ? m : undefined;
    },
    20_000,
  );
  await sleep(6000);
  const events = await lab.events();
  const log = showEvents(events, killAt);
  t.diagnostic(log);
  assert.equal(eventsMatching(events, /^this node is the manager now/, killAt, next).length, 1, log);
  const now = await lab.whereIsDemo();
  assert.deepEqual([now.node, now.epoch, now.status], [demo.node, demo.epoch, 'healthy'], log);
  assert.deepEqual(
    eventsMatching(events, /^demo: (assign|start|restart|stop)/, killAt),
    [],
    `nothing restarted:\n${log}`,
  );
});
