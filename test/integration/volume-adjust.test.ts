/**
 * `cvserver volume adjust` on a running replicated volume: policies and the resync cap change in
 * the running daemon; a bad value names its option and changes nothing; a setting read only at start
 * is reported as such; a broken hand edit is refused with file:line and the daemon keeps its settings.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ReplicaCluster } from '../helpers/replica-cluster.ts';

test('volume adjust: live policies and resync cap, bad values refused, restart-only settings reported', async (t) => {
  const cl = new ReplicaCluster({ replicas: 2, tiebreaker: true, size: '32M' });
  t.after(() => cl.cleanup());
  cl.setup();
  cl.ok('a', ['volume', 'primary', cl.volume]);
  const file = join(cl.volumeDir('a'), 'replication.yaml');
  const original = readFileSync(file, 'utf8');
  const replication = () => cl.status('a').daemon.replication;

  for (const [flag, value] of [
    ['--resync-rate', 'fast'],
    ['--quorum', 'sometimes'],
    ['--after-split-brain', 'merge'],
  ] as const) {
    const r = cl.run('a', ['volume', 'adjust', cl.volume, flag, value]);
    assert.notEqual(r.status, 0, `${flag} ${value} was accepted`);
    assert.match(r.stderr, new RegExp(`${flag}: .*nothing changed`));
    assert.equal(readFileSync(file, 'utf8'), original, `${flag} ${value} changed the file`);
  }

  const args = [
    'volume',
    'adjust',
    cl.volume,
    '--resync-rate',
    '20M',
    '--after-split-brain',
    'discard-zero-changes',
  ];
  const r = JSON.parse(cl.ok('a', [...args, '--json']));
  assert.equal(r.saved, true);
  assert.equal(r.running, true);
  assert.deepEqual(
    r.apply.map((c: { setting: string }) => c.setting),
    ['afterSplitBrain', 'resyncRate'],
  );
  assert.deepEqual(r.atRestart, []);
  assert.equal(replication().resyncRate, 20 * 1024 * 1024);
  assert.equal(replication().afterSplitBrain, 'discard-zero-changes');
  assert.match(
    cl.ok('a', ['volume', 'status', cl.volume]),
    /after split-brain: discard-zero-changes; resync rate: 20/,
  );
  // The same again: nothing to write, nothing to apply.
  const again = JSON.parse(cl.ok('a', [...args, '--json']));
  assert.equal(again.saved, false);
  assert.deepEqual(again.apply, []);

  // A hand edit of the listen address: kept in the file, reported as taking effect at restart.
  const edited = readFileSync(file, 'utf8').replace(
    /^listen: (.*):(\d+)$/m,
    (_, h, p) => `listen: ${h}:${Number(p) + 1}`,
  );
  writeFileSync(file, edited);
  const hand = cl.run('a', ['volume', 'adjust', cl.volume]);
  assert.equal(hand.status, 0, hand.stderr);
  assert.match(hand.stdout, /listen: changed in the file, in force after/);

  // A broken hand edit: refused with the file and line; the daemon keeps what it runs with.
  writeFileSync(file, edited.replace(/^quorum: .*$/m, 'quorum: sometimes'));
  const broken = cl.run('a', ['volume', 'adjust', cl.volume]);
  assert.notEqual(broken.status, 0);
  assert.match(broken.stderr, /replication\.yaml:\d+/);
  assert.equal(replication().quorum.policy, 'suspend-io');
  assert.equal(replication().quorum.hasQuorum, true);
  // status still shows the running daemon, with the file's problem.
  assert.match(
    cl.ok('a', ['volume', 'status', cl.volume]),
    /WARNING: .*replication\.yaml:\d+[\s\S]*quorum yes/,
  );
  writeFileSync(file, original);
});

test('volume adjust: a node leaves a running volume and joins it again with a fresh disk (full sync, verified)', async (t) => {
  const cl = new ReplicaCluster({ replicas: 3, size: '32M' });
  t.after(() => cl.cleanup());
  cl.setup();
  const mnt = cl.node('a').mnt;
  cl.ok('a', ['volume', 'primary', cl.volume, '--mkfs', 'ext4', '--mount', mnt]);
  const peers = () =>
    (cl.status('a').daemon.replication.peers as Array<{ node: string }>).map((p) => p.node).sort();

  // c leaves: the primary and b forget it while running; quorum is now a and b.
  const unknown = cl.run('a', ['volume', 'adjust', cl.volume, '--remove-peer', 'x']);
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /--remove-peer x: not a peer of this volume \(nothing changed\)/);
  for (const n of ['a', 'b']) {
    const left = JSON.parse(cl.ok(n, ['volume', 'adjust', cl.volume, '--remove-peer', 'c', '--json']));
    assert.deepEqual([left.peersRemoved, left.atRestart], [['c'], []]);
  }
  assert.deepEqual(peers(), ['b']);
  assert.equal(cl.status('a').daemon.replication.quorum.hasQuorum, true);
  cl.ok('c', ['volume', 'down', cl.volume]);
  cl.ok('c', ['volume', 'destroy', cl.volume, '--yes']);
  writeFileSync(join(mnt, 'while-c-was-out'), 'x'.repeat(1 << 20));
  spawnSync('sync', ['-f', join(mnt, 'while-c-was-out')]);

  // c joins again with an empty disk: added on both, it gets every block and ends identical.
  cl.ok('c', cl.createArgs('c', cl.status('a').uuid));
  cl.ok('c', ['volume', 'up', cl.volume]);
  const node = cl.node('c');
  for (const n of ['a', 'b']) {
    const args = ['volume', 'adjust', cl.volume, '--add-peer', `c=${node.host}:${node.port}`, '--json'];
    const joined = JSON.parse(cl.ok(n, args));
    assert.deepEqual(joined.peersAdded, ['c']);
    const again = cl.run(n, args);
    assert.notEqual(again.status, 0);
    assert.match(again.stderr, /--add-peer c: already part of this volume/);
  }
  assert.deepEqual(peers(), ['b', 'c']);
  await cl.until('c fully synced', () => {
    const c = cl.peer('a', 'c');
    return c.connection === 'Connected' && c.diskState === 'UpToDate' && !c.resync && c.outOfSyncBytes === 0;
  });
  assert.equal(cl.peer('a', 'c').lastResync?.bytes, 32 * 1024 * 1024, 'a fresh replica gets every block');
  const v = cl.run('a', ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v.status, 0, v.stderr);
  const verified = JSON.parse(v.stdout) as Array<{ peer: string; mismatches: unknown[] }>;
  assert.deepEqual(verified.map((r) => r.peer).sort(), ['b', 'c']);
  for (const r of verified) assert.deepEqual(r.mismatches, [], `replica ${r.peer} differs`);
});
