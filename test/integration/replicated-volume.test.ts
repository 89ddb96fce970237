/**
 * Replicated volumes end to end, through the real CLI: three replica daemons on loopback, FUSE, loop
 * devices and ext4. Kill -9 of the primary at random moments loses no acknowledged record; a replica
 * that was away gets back only what it missed; a primary cut off from its peers suspends I/O and an
 * old-epoch primary is fenced.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { ROOT } from '../helpers/cli.ts';
import { ReplicaCluster } from '../helpers/replica-cluster.ts';

const WRITER = join(ROOT, 'test', 'helpers', 'record-writer.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function startWriter(file: string, ackLog: string, tag: string): ChildProcess {
  return spawn(process.execPath, ['--disable-warning=ExperimentalWarning', WRITER, file, ackLog, tag], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}

/** `dd` of `count` 4 KiB blocks with fsync into `file`, in the background; resolves to its exit code. */
function startDd(t: TestContext, file: string, count: number): Promise<number> {
  const dd = spawn('dd', ['if=/dev/urandom', `of=${file}`, 'bs=4k', `count=${count}`, 'conv=fsync'], {
    stdio: 'ignore',
  });
  t.after(() => stop(dd));
  return new Promise<number>((r) => dd.once('exit', (code) => r(code ?? -1)));
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

function acked(ackLog: string): number[] {
  if (!existsSync(ackLog)) return [];
  return readFileSync(ackLog, 'utf8').split('\n').filter(Boolean).map(Number);
}

test('kill -9 of the primary at random moments: the promoted secondary has every acknowledged record', async (t) => {
  const cl = new ReplicaCluster({ size: '128M' });
  t.after(() => cl.cleanup());
  cl.setup();
  const order = ['a', 'b', 'c'];
  cl.ok('a', ['volume', 'primary', cl.volume, '--mkfs', 'ext4', '--mount', cl.node('a').mnt]);
  const expected: Array<{ tag: string; count: number }> = [];
  for (let round = 0; round < 3; round++) {
    const primary = order[round % 3]!;
    const next = order[(round + 1) % 3]!;
    const tag = `round${round}`;
    const ackLog = join(cl.dir, `${tag}.acked`);
    const writer = startWriter(join(cl.node(primary).mnt, 'records'), ackLog, tag);
    // A random kill point, after the writer is well under way.
    const killAfter = 400 + Math.floor(Math.random() * 1200);
    await sleep(killAfter);
    process.kill(cl.daemonPid(primary), 'SIGKILL');
    await sleep(200);
    await stop(writer);
    const count = acked(ackLog).length;
    console.log(
      `round ${round}: killed ${primary}'s daemon after ${killAfter} ms, ${count} records acknowledged`,
    );
    assert.ok(count > 0, 'the writer acknowledged nothing before the kill');
    expected.push({ tag, count });
    assert.equal(cl.status(primary).health, 'failed');
    cl.ok(primary, ['volume', 'down', cl.volume]);

    // Promote a secondary; the journal replays on mount, then the filesystem must be clean.
    cl.ok(next, ['volume', 'primary', cl.volume, '--mount', cl.node(next).mnt]);
    const records = readFileSync(join(cl.node(next).mnt, 'records'), 'utf8');
    for (const e of expected) {
      for (let n = 0; n < e.count; n++)
        assert.ok(records.includes(`${e.tag}:${n}:`), `acknowledged record ${e.tag}:${n} lost`);
    }
    const loop = cl.status(next).loop as string;
    spawnSync('umount', [cl.node(next).mnt]);
    const fsck = spawnSync('fsck.ext4', ['-fn', loop], { encoding: 'utf8' });
    assert.equal(fsck.status, 0, `fsck -fn after failover: ${fsck.stdout}${fsck.stderr}`);
    spawnSync('mount', [loop, cl.node(next).mnt]);

    // The old primary comes back as a secondary and is made identical again.
    cl.ok(primary, ['volume', 'up', cl.volume]);
    await cl.until(`${primary} back in sync`, () => {
      const peer = cl.peer(next, primary);
      return (
        peer.connection === 'Connected' && peer.outOfSyncBytes === 0 && !peer.resync && !!peer.lastResync
      );
    });
    // Only its activity-log extents and what the new primary wrote travel, not the whole volume.
    const back = cl.peer(next, primary).lastResync!;
    console.log(`round ${round}: ${primary} rejoined, ${back.bytes} bytes resynced`);
    assert.ok(back.bytes < 128 * 1024 * 1024, 'the old primary got a full sync');
  }
  const v = cl.run(order[3 % 3]!, ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v.status, 0, v.stderr);
  for (const r of JSON.parse(v.stdout)) assert.deepEqual(r.mismatches, [], `replica ${r.peer} differs`);
});

test('a replica that was away gets back only what it missed, and ends identical', async (t) => {
  const cl = new ReplicaCluster({ size: '256M' });
  t.after(() => cl.cleanup());
  cl.setup();
  const mnt = cl.node('a').mnt;
  cl.ok('a', ['volume', 'primary', cl.volume, '--mkfs', 'ext4', '--mount', mnt]);
  cl.ok('c', ['volume', 'down', cl.volume]);
  await cl.until('a to see c gone', () => {
    const c = cl.peer('a', 'c');
    return c.connection !== 'Connected';
  });
  const mib = 32;
  const dd = spawnSync(
    'dd',
    ['if=/dev/urandom', `of=${join(mnt, 'while-away')}`, 'bs=1M', `count=${mib}`, 'conv=fsync'],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(dd.status, 0, dd.stderr);
  await cl.until('the writes to be marked for c', () => {
    const c = cl.peer('a', 'c');
    return c.outOfSyncBytes >= mib * 1024 * 1024;
  });
  const sBefore = cl.status('a').daemon;
  const before = sBefore.replication.peers.find((p: { node: string }) => p.node === 'c');
  const dirty = before.outOfSyncBytes as number;
  assert.ok(dirty >= mib * 1024 * 1024, `only ${dirty} bytes marked dirty for ${mib} MiB written`);
  cl.ok('c', ['volume', 'up', cl.volume]);
  await cl.until('c resynced', () => {
    const c = cl.peer('a', 'c');
    return c.connection === 'Connected' && c.outOfSyncBytes === 0 && c.lastResync !== undefined && !c.resync;
  });
  const sAfter = cl.status('a').daemon;
  const after = sAfter.replication.peers.find((p: { node: string }) => p.node === 'c');
  const sent = (after.bytesSent as number) - (before.bytesSent as number);
  // ext4 keeps writing in the background (lazy inode table init, journal): those writes reach c too.
  const appWrites = (sAfter.counters.bytesWritten as number) - (sBefore.counters.bytesWritten as number);
  const { bytes, ms } = after.lastResync as { bytes: number; ms: number };
  console.log(
    `resync: ${mib} MiB written while away, ${dirty} bytes dirty, ${bytes} bytes resynced in ${ms} ms ` +
      `(${(bytes / 1e6 / Math.max(ms / 1000, 0.001)).toFixed(0)} MB/s); on the wire ${sent} bytes, of which ` +
      `${appWrites} bytes were new application writes: ${((sent - appWrites) / dirty).toFixed(3)}x the dirty bytes`,
  );
  assert.ok(bytes <= (dirty + appWrites) * 1.1, `resynced ${bytes} bytes for ${dirty} dirty`);
  assert.ok(sent - appWrites <= dirty * 1.1, `sent ${sent - appWrites} resync bytes for ${dirty} dirty`);
  const v = cl.run('a', ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v.status, 0, v.stderr);
  for (const r of JSON.parse(v.stdout)) assert.deepEqual(r.mismatches, [], `replica ${r.peer} differs`);

  // A wiped replica (destroyed and joined again) starts Inconsistent and gets a full sync.
  cl.ok('c', ['volume', 'down', cl.volume]);
  const busy = cl.run('b', ['volume', 'destroy', cl.volume, '--yes']);
  assert.notEqual(busy.status, 0, 'destroyed a volume that is up');
  assert.match(busy.stderr, /is up or in use/);
  cl.ok('c', ['volume', 'destroy', cl.volume, '--yes']);
  const joined = JSON.parse(cl.ok('c', cl.createArgs('c', cl.status('a').uuid)));
  assert.equal(joined.diskState, 'Inconsistent');
  cl.ok('c', ['volume', 'up', cl.volume]);
  await cl.until('the wiped replica to be fully synced', () => {
    const c = cl.peer('a', 'c');
    return c.connection === 'Connected' && c.outOfSyncBytes === 0 && !c.resync && c.diskState === 'UpToDate';
  });
  const full = cl.peer('a', 'c');
  assert.equal(full.lastResync?.bytes, 256 * 1024 * 1024, 'a wiped replica gets every block');
  const v2 = cl.run('a', ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v2.status, 0, v2.stderr);
  for (const r of JSON.parse(v2.stdout)) assert.deepEqual(r.mismatches, [], `replica ${r.peer} differs`);
});

test('a primary cut off from its peers suspends I/O; the other side promotes with a newer epoch; the old primary is fenced', async (t) => {
  // Detect the cut link in 2 s instead of 6 (the daemons inherit the environment).
  process.env.CVSERVER_PEER_TIMEOUT_MS = '2000';
  const cl = new ReplicaCluster({ size: '128M', netns: true });
  t.after(() => {
    delete process.env.CVSERVER_PEER_TIMEOUT_MS;
    cl.cleanup();
  });
  cl.setup();
  const aMnt = cl.node('a').mnt;
  cl.ok('a', ['volume', 'primary', cl.volume, '--mkfs', 'ext4', '--mount', aMnt]);
  spawnSync('dd', ['if=/dev/urandom', `of=${join(aMnt, 'before-cut')}`, 'bs=1M', 'count=4', 'conv=fsync']);
  const epochA = cl.status('a').daemon.replication.epoch as number;

  cl.cut('a');
  const writerDone = startDd(t, join(aMnt, 'during-cut'), 1);
  await cl.until('a to lose quorum and suspend the write', () => {
    const q = cl.status('a').daemon.replication.quorum;
    return !q.hasQuorum && q.suspendedWrites > 0;
  });
  let finished = false;
  writerDone.then(() => (finished = true));
  await sleep(300);
  assert.equal(finished, false, 'the write completed without quorum');

  // The majority side: the same epoch is refused, a newer one wins.
  const same = cl.run('b', ['volume', 'primary', cl.volume, '--epoch', String(epochA)]);
  assert.notEqual(same.status, 0, 'b became primary with the old epoch');
  assert.match(same.stderr, /epoch/);
  const bMnt = cl.node('b').mnt;
  cl.ok('b', ['volume', 'primary', cl.volume, '--epoch', String(epochA + 1), '--mount', bMnt]);
  assert.ok(existsSync(join(bMnt, 'before-cut')), 'data written before the cut is on the new primary');
  spawnSync('dd', ['if=/dev/urandom', `of=${join(bMnt, 'new-primary')}`, 'bs=1M', 'count=2', 'conv=fsync']);

  // The link comes back: the old primary learns the newer epoch, is fenced, its suspended write fails.
  cl.heal('a');
  const code = await writerDone;
  assert.notEqual(code, 0, 'the old primary acknowledged a write after being fenced');
  assert.equal(cl.status('a').daemon.replication.fenced, true);
  assert.equal(existsSync(join(bMnt, 'during-cut')), false);

  // The old primary steps down and rejoins as a secondary; the replicas end identical.
  cl.ok('a', ['volume', 'secondary', cl.volume]);
  let last: unknown;
  await cl
    .until('a back in sync', () => {
      const p = cl.peer('b', 'a');
      last = p;
      return p.connection === 'Connected' && p.outOfSyncBytes === 0 && !p.resync;
    })
    .catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(last)}`);
    });
  const v = cl.run('b', ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v.status, 0, v.stderr);
  for (const r of JSON.parse(v.stdout)) assert.deepEqual(r.mismatches, [], `replica ${r.peer} differs`);
});

test('down --force: a primary that lost quorum fails its waiting writes instead of hanging', async (t) => {
  const cl = new ReplicaCluster({ replicas: 2, size: '64M' }); // no tiebreaker: b away = no quorum
  t.after(() => cl.cleanup());
  cl.setup();
  const mnt = cl.node('a').mnt;
  cl.ok('a', ['volume', 'primary', cl.volume, '--mkfs', 'ext4', '--mount', mnt]);
  cl.ok('b', ['volume', 'down', cl.volume]);
  const writerDone = startDd(t, join(mnt, 'stuck'), 4);
  await cl.until(
    'the write to be suspended',
    () => cl.status('a').daemon.replication.quorum.suspendedWrites > 0,
  );
  const r = cl.run('a', ['volume', 'down', cl.volume, '--force'], 60_000);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /failed \d+ writes that were waiting for quorum/);
  assert.notEqual(await writerDone, 0, 'the suspended write reported success');
  assert.equal(cl.status('a').health, 'down');
});
