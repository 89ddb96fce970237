import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROOT } from '../helpers/cli.ts';
import { writeDurably } from '../helpers/files.ts';
import { ReplicaCluster } from '../helpers/replica-cluster.ts';
import { forceReleaseSnapshots, sha256Of } from '../helpers/snapshots.ts';

describe('vserver snapshot and rollback on a replicated volume (2 replicas + tiebreaker)', () => {
  const c = new ReplicaCluster({
    replicas: 2,
    tiebreaker: true,
    volume: 'snap12r',
    basePort: 17510,
    dirTag: 'snap12r',
  });
  const vs = 'snap12vs';
  const cliA = (args: string[]) =>
    spawnSync(join(ROOT, 'bin', 'cvserver'), args, {
      env: { ...process.env, CVSERVER_STATE_DIR: c.node('a').stateDir },
      encoding: 'utf8',
      timeout: 300_000,
    });
  const okA = (args: string[]) => {
    const r = cliA(args);
    assert.equal(r.status, 0, `cvserver ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  before(() => {
    c.setup();
    c.ok('a', ['volume', 'primary', c.volume, '--mkfs', 'ext4', '--mount', c.node('a').mnt]);
  });
  after(() => {
    cliA(['vserver', 'destroy', vs]);
    for (const n of c.nodes) forceReleaseSnapshots(c.volumeDir(n.name));
    c.cleanup();
  });

  test('rollback: the files are as at the snapshot, the vserver runs again, the replicas are identical', async () => {
    const rootfs = c.node('a').mnt;
    rmdirSync(join(rootfs, 'lost+found'));
    const def = join(c.dir, `${vs}.yaml`);
    writeFileSync(
      def,
      [`name: ${vs}`, `rootfs: ${rootfs}`, 'command: ["/bin/sh", "-c", "while true; do sleep 1; done"]'].join(
        '\n',
      ),
    );
    okA(['vserver', 'create', def, '--template', 'busybox']);
    okA(['vserver', 'start', vs]);
    const keep = join(rootfs, 'srv-data');
    const gone = join(rootfs, 'will-be-deleted');
    writeDurably(keep, Buffer.alloc(3 * 1024 * 1024, 'a'));
    writeDurably(gone, Buffer.from('present at the snapshot'));
    const keepSum = sha256Of(keep);
    const snap = JSON.parse(okA(['vserver', 'snapshot', vs, 's1', '--json']));
    assert.equal(snap.volume, c.volume);
    console.log(`snapshot of a running vserver: frozen ${snap.frozenMs} ms`);

    // The "bad upgrade": overwrite, delete, add.
    writeDurably(keep, Buffer.alloc(3 * 1024 * 1024, 'b'));
    spawnSync('rm', ['-f', gone, join(rootfs, 'bin', 'ls')]);
    writeDurably(join(rootfs, 'added-later'), Buffer.from('not at the snapshot'));
    spawnSync('sync', ['-f', rootfs]);

    const unknown = cliA(['vserver', 'rollback', vs, 'nope']);
    assert.notEqual(unknown.status, 0);
    assert.match(unknown.stderr, /no snapshot "nope"/);
    assert.equal(
      JSON.parse(okA(['vserver', 'status', vs, '--json'])).state,
      'running',
      'a typo stops nothing',
    );

    const r = JSON.parse(okA(['vserver', 'rollback', vs, 's1', '--json']));
    assert.ok(r.bytes > 0 && r.restarted);
    assert.equal(sha256Of(keep), keepSum);
    assert.equal(spawnSync('cat', [gone], { encoding: 'utf8' }).stdout, 'present at the snapshot');
    assert.equal(spawnSync('test', ['-e', join(rootfs, 'added-later')]).status, 1);
    assert.equal(spawnSync('test', ['-e', join(rootfs, 'bin', 'ls')]).status, 0);
    assert.equal(JSON.parse(okA(['vserver', 'status', vs, '--json'])).state, 'running');
    const fsck = spawnSync(
      'e2fsck',
      ['-fn', JSON.parse(okA(['volume', 'status', c.volume, '--json'])).loop],
      { encoding: 'utf8' },
    );
    assert.ok(fsck.status === 0 || /clean/.test(fsck.stdout), `fsck after rollback: ${fsck.stdout}`);

    const verify = JSON.parse(c.ok('a', ['volume', 'verify', c.volume, '--json']));
    assert.equal(verify.length, 1);
    assert.deepEqual(verify[0].mismatches, [], 'replicas identical after the rollback');
    console.log(
      `rollback wrote back ${r.bytes} bytes; verify compared ${verify[0].bytesCompared} bytes: identical`,
    );
  });

  test("snapshots are the primary's: a secondary refuses to take one", () => {
    const r = c.run('b', ['volume', 'snapshot', 'create', c.volume, 'nope']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /primary/);
  });
});
