/**
 * `cvserver lab` with stand-in nodes (`sleep 1000 & sleep 1000`, so each node has a main process and
 * a child): the network (nodes reach each other and the host reaches them, nothing routes out), the
 * demo vserver's CGI served from a node through the lab LAN, kill (every process of that node and
 * only those, its containers included; its link down), cut/heal, start (stale mounts and loop
 * devices cleared), exec's exit code, and a down that leaves nothing (twice). Every step through
 * the real CLI, each a fresh process, as a user would.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { demoVserverYaml } from '../../src/lab/demo.ts';
import type { LabStatus } from '../../src/lab/lab.ts';
import { planLab } from '../../src/lab/layout.ts';
import { vserverCgroupParent } from '../../src/lab/processes.ts';
import { ROOT, tempDir } from '../helpers/cli.ts';

const NAME = `t${process.pid}`;
const SUBNET = '10.79.0';

function cvs(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(join(ROOT, 'bin', 'cvserver'), args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, out: r.stdout ?? '', err: r.stderr ?? '' };
}

function ok(...args: string[]): string {
  const r = cvs(...args);
  assert.equal(r.code, 0, `cvserver ${args.join(' ')}: ${r.err}`);
  return r.out;
}

const alive = (pid: number) =>
  existsSync(`/proc/${pid}`) &&
  !/\) Z/.test(spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' }).stdout ?? '');

function netnsPids(ns: string): number[] {
  const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
  return (r.stdout ?? '').split('\n').filter(Boolean).map(Number);
}

function hostPing(ip: string): boolean {
  return spawnSync('ping', ['-c', '1', '-W', '1', ip], { stdio: 'ignore' }).status === 0;
}

async function http(url: string, body?: string): Promise<string> {
  const r = await fetch(url, { method: body ? 'POST' : 'GET', body, signal: AbortSignal.timeout(2000) });
  assert.equal(r.status, 200, `${url}: ${r.status}`);
  return (await r.text()).trim();
}

async function until<T>(what: string, f: () => Promise<T> | T, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (err) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

test('lab: network, demo CGI, kill, cut/heal, start, exec, down', { timeout: 120_000 }, async (t) => {
  const base = tempDir('lab');
  const dir = join(base, 'lab');
  const where = ['--name', NAME, '--dir', dir];
  t.after(() => {
    cvs('lab', 'down', ...where);
    rmSync(base, { recursive: true, force: true });
  });

  // up, twice (the second only completes: same pids)
  const upArgs = [
    'lab',
    'up',
    ...where,
    '--subnet',
    SUBNET,
    '--node-command',
    'sleep 1000 & sleep 1000',
    '--no-cluster',
    '--json',
  ];
  const up = JSON.parse(ok(...upArgs)) as LabStatus;
  assert.deepEqual(
    up.nodes.map((n) => [n.name, n.state, n.addresses[0]]),
    [
      ['n1', 'up', `${SUBNET}.11`],
      ['n2', 'up', `${SUBNET}.12`],
      ['n3', 'up', `${SUBNET}.13`],
    ],
  );
  assert.equal(up.demoUrl, `http://${SUBNET}.100/`);
  const again = JSON.parse(ok(...upArgs)) as LabStatus;
  assert.deepEqual(
    again.nodes.map((n) => n.pid),
    up.nodes.map((n) => n.pid),
  );
  const ns = Object.fromEntries(up.nodes.map((n) => [n.name, n.namespace]));
  const ip = (n: string) => up.nodes.find((x) => x.name === n)!.addresses[0]!;

  // the network: nodes reach each other, the host reaches every node, nothing routes beyond
  for (const [from, to] of [
    ['n1', 'n2'],
    ['n2', 'n3'],
    ['n3', 'n1'],
  ] as const)
    assert.equal(
      cvs('lab', 'exec', ...where, from, '--', 'ping', '-c', '1', '-W', '1', ip(to)).code,
      0,
      `${from} -> ${to}`,
    );
  for (const n of ['n1', 'n2', 'n3']) assert.ok(hostPing(ip(n)), `host -> ${n}`);
  assert.equal(cvs('lab', 'exec', ...where, 'n1', '--', 'ip', 'route', 'show', 'default').out.trim(), '');
  assert.notEqual(
    cvs('lab', 'exec', ...where, 'n1', '--', 'ping', '-c', '1', '-W', '1', '192.0.2.1').code,
    0,
  );

  // exec passes the exit code through and runs with the node's state dir
  assert.equal(cvs('lab', 'exec', ...where, 'n2', '--', 'sh', '-c', 'exit 7').code, 7);
  assert.equal(
    ok('lab', 'exec', ...where, 'n2', '--', 'sh', '-c', 'echo $CVSERVER_STATE_DIR').trim(),
    join(dir, 'nodes', 'n2'),
  );

  // the demo vserver on n1 (its veth on n1's lan0), reached from the host through the lab
  const lab = planLab({ name: NAME, dir, subnet: SUBNET });
  const n1State = join(dir, 'nodes', 'n1');
  const yaml = join(base, 'demo.yaml');
  writeFileSync(yaml, demoVserverYaml(lab, join(n1State, 'rootfs-demo')));
  ok('lab', 'exec', ...where, 'n1', '--', 'cvserver', 'vserver', 'create', yaml, '--template', 'busybox');
  ok('lab', 'exec', ...where, 'n1', '--', 'cvserver', 'vserver', 'start', 'demo');
  const records = `${up.demoUrl}cgi-bin/records`;
  assert.equal(await until('the demo', () => http(records)), '0');
  assert.equal(await http(records, 'first'), '1');
  assert.equal(await http(records, 'second'), '2');
  assert.equal(await http(records), '2');
  assert.match(await http(`${records}?all`), /^1 \d+ first\n2 \d+ second$/);
  const demoPid = (
    JSON.parse(
      ok('lab', 'exec', ...where, 'n1', '--', 'cvserver', 'vserver', 'status', 'demo', '--json'),
    ) as { pid: number }
  ).pid;
  assert.ok(demoPid && alive(demoPid));

  // kill n1: every process of n1 (its container too), and only those; its link goes down
  const before = Object.fromEntries(['n1', 'n2', 'n3'].map((n) => [n, netnsPids(ns[n]!)]));
  assert.ok(before.n1!.length >= 3, 'n1: main process, child, vserver supervisor');
  const killed = JSON.parse(ok('lab', 'kill', ...where, 'n1', '--json')) as { killed: number[] };
  // Every process of n1 is dead; the long-lived ones were killed by it (a health probe seen before
  // may have ended on its own in between).
  for (const p of [...before.n1!, demoPid]) assert.ok(!alive(p), `${p} of n1 is dead`);
  for (const p of [Math.min(...before.n1!), demoPid])
    assert.ok(killed.killed.includes(p), `kill reported ${p}`);
  for (const p of [...before.n2!, ...before.n3!]) assert.ok(alive(p), `${p} of n2/n3 is alive`);
  assert.notEqual(cvs('lab', 'exec', ...where, 'n2', '--', 'ping', '-c', '1', '-W', '1', ip('n1')).code, 0);
  await assert.rejects(http(records));
  let st = JSON.parse(ok('lab', 'status', ...where, '--json')) as LabStatus;
  assert.deepEqual(
    st.nodes.map((n) => n.state),
    ['down', 'up', 'up'],
  );

  // cut n2 (alive, unreachable), heal (every link up)
  ok('lab', 'cut', ...where, 'n2');
  st = JSON.parse(ok('lab', 'status', ...where, '--json')) as LabStatus;
  assert.deepEqual(
    st.nodes.map((n) => n.state),
    ['down', 'cut', 'up'],
  );
  assert.notEqual(cvs('lab', 'exec', ...where, 'n3', '--', 'ping', '-c', '1', '-W', '1', ip('n2')).code, 0);
  for (const p of before.n2!) assert.ok(alive(p));
  ok('lab', 'heal', ...where);
  assert.equal(cvs('lab', 'exec', ...where, 'n3', '--', 'ping', '-c', '1', '-W', '1', ip('n2')).code, 0);
  st = JSON.parse(ok('lab', 'status', ...where, '--json')) as LabStatus;
  assert.deepEqual(
    st.nodes.map((n) => n.state),
    ['stopped', 'up', 'up'],
  );

  // start n1: a stale mount and a loop device under its state dir are cleared, then it runs again
  const stale = join(n1State, 'mnt', 'stale');
  mkdirSync(stale, { recursive: true });
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', stale]).status, 0);
  const img = join(n1State, 'stale.img');
  spawnSync('truncate', ['-s', '8M', img]);
  const loop = spawnSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).stdout.trim();
  assert.match(loop, /^\/dev\/loop\d+$/);
  const started = JSON.parse(ok('lab', 'start', ...where, 'n1', '--json')) as {
    pid: number;
    cleanup: { unmounted: string[]; detached: string[] };
  };
  assert.deepEqual(started.cleanup.unmounted, [stale]);
  assert.deepEqual(started.cleanup.detached, [loop]);
  assert.ok(alive(started.pid));
  assert.equal(cvs('lab', 'exec', ...where, 'n2', '--', 'ping', '-c', '1', '-W', '1', ip('n1')).code, 0);
  st = JSON.parse(ok('lab', 'status', ...where, '--json')) as LabStatus;
  assert.deepEqual(
    st.nodes.map((n) => n.state),
    ['up', 'up', 'up'],
  );
  const all = [...Object.values(before).flat(), ...netnsPids(ns.n1!)];

  // down: nothing left; down again is fine
  ok('lab', 'down', ...where);
  const names = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.ok(!names.includes(`cvl-${NAME}-`), names);
  assert.notEqual(spawnSync('ip', ['link', 'show', `cvl${NAME}h`], { stdio: 'ignore' }).status, 0);
  for (const p of all) assert.ok(!alive(p), `${p} dead after down`);
  assert.ok(!existsSync(dir));
  assert.ok(
    !existsSync(join('/sys/fs/cgroup/freezer', vserverCgroupParent(n1State))),
    "the containers' cgroups are gone",
  );
  assert.match(ok('lab', 'down', ...where), /nothing to remove/);
});
