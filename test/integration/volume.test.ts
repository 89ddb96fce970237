import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cli, tempDir } from '../helpers/cli.ts';
import { writeDurably } from '../helpers/files.ts';

const state = tempDir('vol');
const mnt = join(state, 'mnt');
const name = `t${process.pid}`;
const volDir = join(state, 'volumes', name);

function ok(args: string[]): string {
  const r = cli(state, args);
  assert.equal(r.status, 0, `cvserver ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Last resort if `volume down` cannot clean up: only what this test made, by path and pid. */
function forceCleanup(): void {
  spawnSync('umount', ['-l', mnt]);
  const loops = spawnSync('losetup', ['-j', join(volDir, 'fuse', 'device')], { encoding: 'utf8' }).stdout;
  for (const line of loops.split('\n').filter(Boolean)) spawnSync('losetup', ['-d', line.split(':')[0]!]);
  spawnSync('umount', ['-l', join(volDir, 'fuse')]);
  try {
    const pid = Number(readFileSync(join(volDir, 'run', 'daemon.pid'), 'utf8'));
    if (pid) process.kill(pid, 'SIGKILL');
  } catch {}
}

describe('local volume on FUSE + loop + ext4', () => {
  const files = new Map<string, string>();

  before(() => mkdirSync(mnt));
  after(() => {
    cli(state, ['volume', 'down', name]);
    forceCleanup();
    rmSync(state, { recursive: true, force: true });
  });

  test('create, up with ext4, write with fsync, down, up: files intact', () => {
    ok(['volume', 'create', name, '--size', '128M']);
    ok(['volume', 'up', name, '--mkfs', 'ext4', '--mount', mnt]);
    for (let i = 0; i < 5; i++) {
      const data = Buffer.alloc(300_000 + i * 70_000);
      for (let j = 0; j < data.length; j += 4096) data.writeUInt32LE((j * 2654435761 + i) >>> 0, j);
      const f = join(mnt, `file${i}`);
      writeDurably(f, data);
      files.set(f, sha(f));
    }
    execFileSync('sleep', ['1.2']); // the daemon refreshes its counters every second
    const st = JSON.parse(ok(['volume', 'status', name, '--json']));
    assert.equal(st.health, 'up');
    assert.ok(st.daemon.counters.fsyncs > 0, 'fsync reached the daemon');
    ok(['volume', 'up', name, '--mount', mnt]); // idempotent
    ok(['volume', 'down', name]);
    assert.equal(JSON.parse(ok(['volume', 'status', name, '--json'])).health, 'down');
    ok(['volume', 'down', name]); // idempotent
    ok(['volume', 'up', name, '--mount', mnt]);
    for (const [f, sum] of files) assert.equal(sha(f), sum, f);
  });

  test('kill -9 of the daemon is a failed volume; down + up recovers every fsynced file', () => {
    const f = join(mnt, 'after-crash-marker');
    writeDurably(f, Buffer.from('written before the crash'));
    files.set(f, sha(f));
    const pid = Number(readFileSync(join(volDir, 'run', 'daemon.pid'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    execFileSync('sleep', ['0.3']);
    const r = cli(state, ['volume', 'status', name, '--json']);
    assert.equal(r.status, 3, 'status exits 3 for a failed volume');
    assert.equal(JSON.parse(r.stdout).health, 'failed');
    ok(['volume', 'down', name]);
    ok(['volume', 'up', name, '--mount', mnt]);
    for (const [file, sum] of files) assert.equal(sha(file), sum, file);
    const listed = JSON.parse(ok(['volume', 'list', '--json']));
    assert.equal(listed.length, 1);
    ok(['volume', 'down', name]);
  });

  test('bad input: one clear line, non-zero exit, nothing changed', () => {
    const secret = join(state, 'secret');
    writeFileSync(secret, 'a-secret-of-enough-bytes\n', { mode: 0o600 });
    const replicaArgs = [
      'volume',
      'create',
      'x1',
      '--size',
      '1G',
      '--node',
      'a',
      '--peer',
      'b=10.0.0.2:7789',
    ];
    replicaArgs.push('--secret-file', secret);
    const before = readdirSync(join(state, 'volumes')).sort();
    const meta = readFileSync(join(volDir, 'meta.json'), 'utf8');
    const cases: Array<[string[], RegExp]> = [
      [['volume', 'create', 'x1', '--size', '12XB'], /--size: "12XB" is not a size/],
      [['volume', 'create', 'x1', '--size', '1M'], /at least 16M/],
      [['volume', 'create', 'Bad Name', '--size', '1G'], /volume name "Bad Name" is invalid/],
      [['volume', 'create', name, '--size', '1G'], /already exists/],
      [['volume', 'up', 'missing'], /volume "missing" does not exist/],
      [['volume', 'create', 'x1', '--size', '1G', '--uuid', 'nope'], /--uuid "nope": expected a UUID/],
      [
        ['volume', 'create', 'x1', '--size', '1G', '--uuid', '3f2c1e9a-8b7d-4c6e-9a1f-2b3c4d5e6f70'],
        /--uuid: joining a replicated volume needs the replication options/,
      ],
      [['volume', 'create', 'x1', '--size', '1G', '--node', 'a'], /also needs --listen, --secret-file/],
      [[...replicaArgs, '--listen', '10.0.0.1:7789', '--peer', 'c'], /--peer "c": expected NODE=HOST:PORT/],
      [[...replicaArgs, '--listen', '10.0.0.1'], /listen: expected HOST:PORT/],
      [[...replicaArgs, '--listen', '10.0.0.1:7789', '--quorum', 'maybe'], /quorum: /],
      [['volume', 'primary', name], /is not replicated/],
      [['volume', 'verify', name], /is not replicated/],
      [['volume', 'secondary', name], /is not replicated/],
    ];
    for (const [args, re] of cases) {
      const r = cli(state, args);
      assert.notEqual(r.status, 0, args.join(' '));
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
    assert.deepEqual(readdirSync(join(state, 'volumes')).sort(), before);

    for (const [bad, re] of [
      ['{ not json', /metadata is corrupt \(not valid JSON\)/],
      [meta.replace('"formatVersion": 1', '"formatVersion": 9'), /format version 9 is newer/],
      [meta.replace(/"size": \d+/, '"size": "big"'), /metadata is corrupt: size/],
    ] as const) {
      writeFileSync(join(volDir, 'meta.json'), bad);
      const r = cli(state, ['volume', 'up', name]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, re);
      assert.equal(readFileSync(join(volDir, 'meta.json'), 'utf8'), bad, 'metadata untouched');
    }
    writeFileSync(join(volDir, 'meta.json'), meta);
  });
});
