import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROOT, tempDir } from '../helpers/cli.ts';
import { writeDurably } from '../helpers/files.ts';
import { forceReleaseSnapshots, sha256Of } from '../helpers/snapshots.ts';

const state = tempDir('bk12');
const repo = join(state, 'repo');
const pw = join(state, 'restic-password');
const configFile = join(state, 'cluster.yaml');
const rootfs = join(state, 'rootfs-bk12vs');
const vs = 'bk12vs';
const vol = 'bk12v';

function clusterYaml(o: { repository?: string; passwordFile?: string; schedule?: string } = {}): string {
  return [
    'cluster: bk12',
    'nodes:',
    '  - { name: n1, addresses: [10.0.0.1] }',
    'backup:',
    `  repository: ${o.repository ?? repo}`,
    `  password_file: ${o.passwordFile ?? pw}`,
    'vservers:',
    `  ${vs}:`,
    '    template: busybox',
    '    command: ["/bin/sh"]',
    '    volume: { size: 64M, replicas: [n1], port: 7801 }',
    '    backup:',
    `      schedule: "${o.schedule ?? '0 2 * * *'}"`,
    '      keep: { daily: 2 }',
    '',
  ].join('\n');
}

function run(args: string[], config = configFile) {
  const r = spawnSync(join(ROOT, 'bin', 'cvserver'), args, {
    env: { ...process.env, CVSERVER_STATE_DIR: state, CVSERVER_CLUSTER_CONFIG: config },
    encoding: 'utf8',
    timeout: 600_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
function ok(args: string[], config = configFile): string {
  const r = run(args, config);
  assert.equal(r.status, 0, `cvserver ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Deterministic pseudo-random bytes (incompressible, so restic's figures are the data's). */
function noise(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, i);
  }
  return b;
}

function noSnapshotLeft(): void {
  assert.deepEqual(
    JSON.parse(ok(['volume', 'snapshot', 'list', vol, '--json'])),
    [],
    'no snapshot left behind',
  );
  assert.equal(
    JSON.parse(ok(['vserver', 'status', vs, '--json'])).state,
    'running',
    'the vserver is untouched',
  );
}

describe('backups with restic (local repository)', () => {
  let firstSum = '';
  const backups: string[] = [];

  before(() => {
    mkdirSync(rootfs);
    writeFileSync(pw, 'bk12-correct-horse\n', { mode: 0o600 });
    writeFileSync(configFile, clusterYaml());
    ok(['volume', 'create', vol, '--size', '256M']);
    ok(['volume', 'up', vol, '--mkfs', 'ext4', '--mount', rootfs]);
    rmdirSync(join(rootfs, 'lost+found'));
    const def = join(state, `${vs}.yaml`);
    writeFileSync(
      def,
      [`name: ${vs}`, `rootfs: ${rootfs}`, 'command: ["/bin/sh", "-c", "while true; do sleep 1; done"]'].join(
        '\n',
      ),
    );
    ok(['vserver', 'create', def, '--template', 'busybox']);
    ok(['vserver', 'start', vs]);
    // Mixed files: a few big, many small.
    mkdirSync(join(rootfs, 'srv', 'small'), { recursive: true });
    for (let i = 0; i < 4; i++) writeDurably(join(rootfs, 'srv', `big${i}`), noise(4 * 1024 * 1024, i + 1));
    for (let i = 0; i < 200; i++)
      writeDurably(join(rootfs, 'srv', 'small', `f${i}`), noise(4096 + i * 64, 1000 + i));
  });
  after(() => {
    for (const v of [vs, `${vs}-copy`]) run(['vserver', 'destroy', v]);
    for (const v of [vol, `${vs}-copy`]) {
      forceReleaseSnapshots(join(state, 'volumes', v));
      run(['volume', 'down', v]);
    }
    spawnSync('umount', ['-l', join(state, 'backup', 'mnt', vs)]);
    rmSync(state, { recursive: true, force: true });
  });

  test('bad input: wrong password, unreachable repository, open password file, bad cron: clear errors, nothing left', () => {
    const wrongPw = join(state, 'wrong-password');
    writeFileSync(wrongPw, 'nope\n', { mode: 0o600 });
    // No repository yet: unreachable.
    let r = run(['backup', 'run', vs]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /no repository there, or it cannot be reached/);
    noSnapshotLeft();
    ok(['backup', 'init']);
    const wrongCfg = join(state, 'wrong.yaml');
    writeFileSync(wrongCfg, clusterYaml({ passwordFile: wrongPw }));
    r = run(['backup', 'run', vs], wrongCfg);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /wrong password/);
    noSnapshotLeft();
    chmodSync(wrongPw, 0o644);
    r = run(['backup', 'run', vs], wrongCfg);
    assert.match(r.stderr, /mode is 644, expected 600/);
    const far = join(state, 'far.yaml');
    writeFileSync(far, clusterYaml({ repository: 'rest:http://127.0.0.1:17599/' }));
    r = run(['backup', 'run', vs], far);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /backup repository rest:http:\/\/127\.0\.0\.1:17599\/: /);
    noSnapshotLeft();
    const badCron = join(state, 'cron.yaml');
    writeFileSync(badCron, clusterYaml({ schedule: '61 * * * *' }));
    r = run(['backup', 'list'], badCron);
    assert.notEqual(r.status, 0);
    assert.match(
      r.stderr,
      /cron\.yaml:13:\d+: vservers\.bk12vs\.backup\.schedule: "61 \* \* \* \*" is not a cron expression/,
    );
  });

  test('backup, change a few files, backup again: the second adds about the changed bytes', () => {
    const first = JSON.parse(ok(['backup', 'run', vs, '--json']));
    firstSum = sha256Of(join(rootfs, 'srv', 'big1'));
    backups.push(first.snapshotId);
    // Change 1 MiB of one big file, and two small files.
    const fd = join(rootfs, 'srv', 'big2');
    const data = readFileSync(fd);
    noise(1024 * 1024, 77).copy(data, 1024 * 1024);
    writeDurably(fd, data);
    writeDurably(join(rootfs, 'srv', 'small', 'f1'), noise(8192, 99));
    writeDurably(join(rootfs, 'srv', 'small', 'f2'), noise(8192, 98));
    const second = JSON.parse(ok(['backup', 'run', vs, '--json']));
    backups.push(second.snapshotId);
    console.log(
      `first backup: ${first.bytesProcessed} bytes read, ${first.bytesAdded} added in ${first.seconds} s; second: ${second.filesChanged} files changed, ${second.bytesAdded} bytes added in ${second.seconds} s (changed: ${1024 * 1024 + 16384})`,
    );
    assert.ok(first.bytesAdded > 16 * 1024 * 1024, 'the first backup stored the data');
    assert.equal(second.filesChanged, 3);
    // restic cuts files into content-defined chunks (512 KiB-8 MiB, boundaries from a polynomial drawn
    // per repository): 1 MiB changed in the 4 MiB big2 can store all of big2 again (4.29 MB once in CI
    // against 3.43 MB the run before). At most the changed files and their metadata, then, and none of
    // the 12 MiB of unchanged big files.
    const changedFiles = 4 * 1024 * 1024 + 2 * 8192;
    assert.ok(
      second.bytesAdded < changedFiles + 512 * 1024,
      `the second added ${second.bytesAdded} bytes (the changed files: ${changedFiles})`,
    );
    noSnapshotLeft();
    const list = JSON.parse(ok(['backup', 'list', vs, '--json']));
    assert.equal(list.length, 2);
    assert.equal(list[0].vserver, vs);
    assert.match(list[0].volume, /^[0-9a-f-]{36}$/);
  });

  test('restore one file: it matches its checksum at backup time', () => {
    const target = join(state, 'restored');
    mkdirSync(target);
    writeDurably(join(rootfs, 'srv', 'big1'), noise(1000, 5)); // the "accident"
    ok(['backup', 'restore', vs, backups[0]!, '--path', '/srv/big1', '--target', target]);
    assert.equal(sha256Of(join(target, 'big1')), firstSum);
    const missing = run(['backup', 'restore', vs, backups[0]!, '--path', '/no/such', '--target', target]);
    assert.match(missing.stderr, /has no \/no\/such/);
  });

  test('restore --as: a whole vserver on a new volume starts with the same content', () => {
    const copy = `${vs}-copy`;
    const r = JSON.parse(ok(['backup', 'restore', vs, backups[1]!, '--as', copy, '--json']));
    assert.equal(r.started, true);
    assert.equal(JSON.parse(ok(['vserver', 'status', copy, '--json'])).state, 'running');
    assert.equal(sha256Of(join(r.rootfs, 'srv', 'big2')), sha256Of(join(rootfs, 'srv', 'big2')));
    assert.equal(readdirSync(join(r.rootfs, 'srv', 'small')).length, 200);
    const inside = spawnSync(
      join(ROOT, 'bin', 'cvserver'),
      ['vserver', 'exec', copy, '--', 'cat', '/srv/small/f1'],
      {
        env: { ...process.env, CVSERVER_STATE_DIR: state },
      },
    );
    assert.equal(inside.status, 0);
    assert.ok(noise(8192, 99).equals(inside.stdout), 'the restored vserver serves the backed-up content');
  });

  test('retention with forced times: keep daily 2 keeps the last backup of each of the 2 latest days', () => {
    const times = [
      '2024-03-01 10:00:00',
      '2024-03-02 09:00:00',
      '2024-03-02 18:00:00',
      '2024-03-03 08:00:00',
    ];
    const ids = times.map(
      (t) => JSON.parse(ok(['backup', 'run', vs, '--time', t, '--json'])).snapshotId as string,
    );
    const r = JSON.parse(ok(['backup', 'forget', vs, '--json']));
    const left = (
      JSON.parse(ok(['backup', 'list', vs, '--json'])) as Array<{ shortId: string; time: string }>
    ).map((s) => s.time);
    console.log(`forget kept ${r.kept.length}, removed ${r.removed.length}; left: ${left.join(', ')}`);
    // The two latest days are today's real backups (the two above) and 2024-03-03: daily 2 keeps today's last and 03-03's.
    assert.equal(left.length, 2);
    assert.ok(
      left.some((t) => t.startsWith('2024-03-03T08:00:00')),
      'the last of 2024-03-03 is kept',
    );
    assert.ok(
      !left.some((t) => t.startsWith('2024-03-0') && !t.startsWith('2024-03-03')),
      'older days are gone',
    );
    void ids;
  });

  test('verify passes; a corrupted pack file is reported as an error', () => {
    ok(['backup', 'verify']);
    ok(['backup', 'verify', '--read-data-subset', '50%']);
    const bad = run(['backup', 'verify', '--read-data-subset', 'lots']);
    assert.match(bad.stderr, /expected a percentage/);
    // Flip bytes in the middle of the largest pack file.
    const packs: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name));
        else packs.push(join(d, e.name));
      }
    };
    walk(join(repo, 'data'));
    const pack = packs.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
    chmodSync(pack, 0o644);
    const bytes = readFileSync(pack);
    for (let i = 0; i < 64; i++) bytes[Math.floor(bytes.length / 2) + i]! ^= 0xff;
    writeFileSync(pack, bytes);
    const r = run(['backup', 'verify', '--read-data-subset', '100%']);
    assert.equal(r.status, 4, `verify must fail on a corrupted pack: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /the repository has errors/);
  });
});
