/**
 * A node's resources on real volumes, FUSE, loop devices and crun: two replica "nodes" and a witness
 * (tiebreaker) on loopback, each its own state dir, driven in this one process through
 * createNodeResources. A vserver starts on a, moves to b with a newer epoch and keeps its data; then
 * b's guard, left without a newer deadline, kills b's container and volume daemon, and cleanupStale
 * makes the volume usable again.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GuardClient, guardPaths, liveGuardPid, spawnGuard } from '../../src/agent/guard.ts';
import { volumeDaemonPid } from '../../src/agent/resources/processes.ts';
import { inStateDir } from '../../src/agent/resources/state-dir-scope.ts';
import { createNodeResources, mountPoint, type ReplicaContext } from '../../src/agent/resources.ts';
import { parseClusterConfig } from '../../src/cluster/config.ts';
import { monotonicMs } from '../../src/lib/clock.ts';
import { listVolumes, volumeDown } from '../../src/volume/lifecycle.ts';
import { containerState, destroyVserver } from '../../src/vserver/manager.ts';
import { listNames } from '../../src/vserver/store.ts';
import { tempDir } from '../helpers/cli.ts';

const PORT = 24801;
const GUARD_MAIN = fileURLToPath(new URL('../../src/agent/guard-main.ts', import.meta.url));

const until = async <T>(what: string, ms: number, probe: () => Promise<T | undefined> | T | undefined) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

test('agent resources: start, move with a newer epoch, guard fence, stale cleanup', async (t) => {
  const dir = tempDir('agres');
  const secretFile = join(dir, 'secret');
  writeFileSync(secretFile, `${randomUUID()}${randomUUID()}\n`, { mode: 0o600 });
  const cluster = parseClusterConfig(
    [
      'cluster: agres',
      `secret_file: ${secretFile}`,
      'nodes:',
      '  - { name: a, addresses: [127.0.88.1] }',
      '  - { name: b, addresses: [127.0.88.2] }',
      '  - { name: w, role: witness, addresses: [127.0.88.3] }',
      'vservers:',
      '  web:',
      '    template: busybox',
      '    command: [/bin/sh, -c, "trap \'exit 0\' TERM; while true; do sleep 1; done"]',
      '    stop: { timeout: 2s }',
      '    health_checks: [{ type: exec, command: [/bin/true], interval: 200ms }]',
      `    volume: { size: 64M, filesystem: ext4, replicas: [a, b], port: ${PORT} }`,
    ].join('\n'),
    'agres.yaml',
  );
  const spec = cluster.vservers.web!;
  const uuid = randomUUID();
  const nodes = ['a', 'b', 'w'].map((name) => {
    const stateDir = join(dir, name);
    const ctx: ReplicaContext = { cluster, node: name, uuid, blank: true, secretFile };
    return { name, stateDir, ctx, res: createNodeResources({ stateDir }) };
  });
  const [a, b, w] = nodes as [(typeof nodes)[0], (typeof nodes)[0], (typeof nodes)[0]];
  let guardPid: number | undefined;

  t.after(async () => {
    if (guardPid && liveGuardPid(b.stateDir) === guardPid) process.kill(guardPid, 'SIGKILL');
    for (const n of nodes) await teardown(n.stateDir);
    rmSync(dir, { recursive: true, force: true });
  });

  await t.test('ensureReplica: created on every node (the witness diskless), up, idempotent', async () => {
    for (const n of nodes) await n.res.ensureReplica(spec, n.ctx);
    await a.res.ensureReplica(spec, a.ctx);
    const meta = JSON.parse(readFileSync(join(w.stateDir, 'volumes/web/meta.json'), 'utf8')) as {
      diskState: string;
      uuid: string;
    };
    assert.equal(meta.diskState, 'Diskless');
    assert.equal(meta.uuid, uuid);
    assert.ok(!existsSync(join(w.stateDir, 'volumes/web/data')));
    const o = await a.res.observe(spec);
    assert.equal(o.container, 'absent');
    assert.deepEqual(o.volume, {
      up: true,
      role: 'secondary',
      diskState: 'UpToDate',
      upToDate: true,
      epoch: 0,
      failed: false,
      outOfSyncBytes: 0,
      resyncBytesPerSecond: 0,
      suspendedWrites: 0,
      splitBrain: false,
    });
  });

  await t.test('start on a with epoch 1: primary, mounted, root fs from the template, running', async () => {
    await a.res.start(spec, 1, a.ctx);
    const o = await a.res.observe(spec);
    assert.equal(o.container, 'running');
    assert.equal(o.volume.role, 'primary');
    assert.equal(o.volume.epoch, 1);
    const pid = await inStateDir(a.stateDir, async () => (await containerState('web')).pid);
    // Again (a re-adoption): nothing restarts.
    await a.res.start(spec, 1, a.ctx);
    assert.equal(await inStateDir(a.stateDir, async () => (await containerState('web')).pid), pid);
    await until(
      'the health check to pass',
      10_000,
      async () => (await a.res.observe(spec)).health === 'healthy',
    );
    const mnt = mountPoint(a.stateDir, 'web');
    assert.ok(existsSync(join(mnt, 'bin/busybox')));
    assert.ok(existsSync(join(mnt, 'lost+found')));
    const fd = openSync(join(mnt, 'root/hello'), 'w');
    writeFileSync(fd, 'written on a\n');
    fsyncSync(fd);
    closeSync(fd);
  });

  await t.test('stop on a, start on b with epoch 2: the file is there', async () => {
    await a.res.stop(spec, false, 'moving to b');
    const oa = await a.res.observe(spec);
    assert.equal(oa.container, 'absent');
    assert.equal(oa.volume.role, 'secondary');
    assert.equal(oa.volume.failed, false);
    await b.res.start(spec, 2, b.ctx);
    const ob = await b.res.observe(spec);
    assert.equal(ob.container, 'running');
    assert.equal(ob.volume.role, 'primary');
    assert.equal(ob.volume.epoch, 2);
    assert.equal(readFileSync(join(mountPoint(b.stateDir, 'web'), 'root/hello'), 'utf8'), 'written on a\n');
  });

  await t.test(
    'the guard: a second one refuses; at the deadline it kills the container and the daemon',
    async () => {
      guardPid = await spawnGuard(b.stateDir);
      const gp = guardPaths(b.stateDir);
      const second = spawnSync(
        process.execPath,
        ['--disable-warning=ExperimentalWarning', GUARD_MAIN, b.stateDir],
        {
          encoding: 'utf8',
          timeout: 10_000,
        },
      );
      assert.notEqual(second.status, 0);
      assert.match(second.stderr, /already runs/);
      assert.equal(liveGuardPid(b.stateDir), guardPid);
      const daemon = volumeDaemonPid(join(b.stateDir, 'volumes/web'));
      assert.ok(daemon);
      const client = new GuardClient(b.stateDir);
      // Far enough ahead that a loaded machine still checks "not yet" before it.
      const deadline = monotonicMs() + 4000;
      client.send({ deadline, protect: { containers: ['web'], volumes: ['web'] } });
      await new Promise((r) => setTimeout(r, 100));
      // The agent going away is no reason to fence early.
      client.close();
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(await inStateDir(b.stateDir, async () => (await containerState('web')).status), 'running');
      // The guard logs its fence after the kills: wait for the line too (it may lag the kills' effects).
      const fencedLine = () =>
        readFileSync(gp.log, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find((e) => e.event === 'fenced');
      await until('the guard to fence', 10_000, async () => {
        const st = await inStateDir(b.stateDir, async () => (await containerState('web')).status);
        return st !== 'running' && !existsSync(`/proc/${daemon}`) && fencedLine() !== undefined;
      });
      assert.ok(monotonicMs() >= deadline);
      const fenced = fencedLine() as
        | {
            lateMs: number;
            containers: { name: string; pids: number[] }[];
            volumes: { name: string; pid: number }[];
          }
        | undefined;
      assert.ok(fenced, 'a fenced line in guard.log');
      assert.equal(fenced.containers[0]?.name, 'web');
      assert.ok((fenced.containers[0]?.pids.length ?? 0) > 0);
      assert.deepEqual(fenced.volumes, [{ name: 'web', pid: daemon }]);
      assert.ok(fenced.lateMs >= 0 && fenced.lateMs < 200, `late by ${fenced.lateMs} ms`);
      const o = await b.res.observe(spec);
      assert.equal(o.volume.failed, true);
      assert.equal(o.volume.up, false);
    },
  );

  await t.test(
    'cleanupStale, then ensureReplica and start: the volume is usable again, data kept',
    async () => {
      await b.res.cleanupStale();
      const o1 = await b.res.observe(spec);
      assert.equal(o1.volume.failed, false);
      assert.equal(o1.container, 'absent');
      assert.ok(!readFileSync('/proc/mounts', 'utf8').includes(b.stateDir), 'no mount of b left');
      await b.res.ensureReplica(spec, b.ctx);
      const o2 = await b.res.observe(spec);
      assert.equal(o2.volume.up, true);
      assert.equal(o2.volume.role, 'secondary');
      await b.res.start(spec, 3, b.ctx);
      const o3 = await b.res.observe(spec);
      assert.equal(o3.container, 'running');
      assert.equal(o3.volume.epoch, 3);
      assert.equal(readFileSync(join(mountPoint(b.stateDir, 'web'), 'root/hello'), 'utf8'), 'written on a\n');
      await b.res.stop(spec, true, 'test done');
      assert.equal((await b.res.observe(spec)).container, 'absent');
    },
  );
});

/** Everything a node's state dir holds: vservers (stopped, destroyed), volumes down, whatever else by force. */
async function teardown(stateDir: string): Promise<void> {
  if (!existsSync(stateDir)) return;
  await inStateDir(stateDir, async () => {
    for (const name of listNames()) await destroyVserver(name, false).catch(() => undefined);
    for (const v of listVolumes()) {
      try {
        await volumeDown(v, () => {}, { force: true });
      } catch {
        const vol = join(stateDir, 'volumes', v);
        const pid = volumeDaemonPid(vol);
        if (pid) process.kill(pid, 'SIGKILL');
        spawnSync('umount', ['-l', mountPoint(stateDir, v)]);
        const loops = spawnSync('losetup', ['-j', join(vol, 'fuse', 'device')], { encoding: 'utf8' }).stdout;
        for (const line of loops.split('\n').filter(Boolean))
          spawnSync('losetup', ['-d', line.split(':')[0]!]);
        spawnSync('umount', ['-l', join(vol, 'fuse')]);
      }
    }
  });
}
