import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { credentialCopyPlan } from '../../../src/cli/init.ts';
import { loadClusterConfig, parseClusterConfig } from '../../../src/cluster/config.ts';

const ROOT = join(import.meta.dirname, '../../..');
const WITNESS = join(ROOT, 'test/fixtures/cluster/two-nodes-witness.yaml');

function cvserver(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(join(ROOT, 'bin/cvserver'), args, { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The witness example with its secret (and so its tls dir) under `dir`. */
function clusterFileIn(dir: string): string {
  const file = join(dir, 'cluster.yaml');
  const text = readFileSync(WITNESS, 'utf8').replace('/etc/cvserver/secret', join(dir, 'etc/secret'));
  writeFileSync(file, text);
  return file;
}

function snapshot(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .sort()
    .map((f) => {
      const st = statSync(join(dir, f));
      return `${f} ${st.mode.toString(8)} ${st.isFile() ? readFileSync(join(dir, f), 'utf8') : ''}`;
    });
}

test('copy plan: secret, CA certificate and the node’s own pair; the CA key stays', () => {
  const plan = credentialCopyPlan(loadClusterConfig(WITNESS));
  assert.deepEqual(plan.nodes[2], {
    node: 'w',
    address: '10.77.0.13',
    files: [
      '/etc/cvserver/secret',
      '/etc/cvserver/tls/ca.crt',
      '/etc/cvserver/tls/w.crt',
      '/etc/cvserver/tls/w.key',
    ],
  });
  assert.deepEqual(plan.keepPrivate, ['/etc/cvserver/tls/ca.key']);
  const custom = parseClusterConfig(
    readFileSync(WITNESS, 'utf8').replace(
      'secret_file: /etc/cvserver/secret',
      'secret_file: /s/k\ntls_dir: /t',
    ),
    'c.yaml',
  );
  assert.deepEqual(credentialCopyPlan(custom).nodes[0]?.files, [
    '/s/k',
    '/t/ca.crt',
    '/t/n1.crt',
    '/t/n1.key',
  ]);
});

test('cvserver init makes the credentials once and refuses the second time, changing nothing', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cvserver-init-test-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = clusterFileIn(dir);

  const first = cvserver('init', file, '--json');
  assert.equal(first.status, 0, first.stderr);
  const out = JSON.parse(first.stdout) as { cluster: string; created: string[]; nodes: { node: string }[] };
  assert.equal(out.cluster, 'demo');
  assert.deepEqual(
    out.nodes.map((n) => n.node),
    ['n1', 'n2', 'w'],
  );
  assert.deepEqual(readdirSync(join(dir, 'etc/tls')).sort(), [
    'ca.crt',
    'ca.key',
    'n1.crt',
    'n1.key',
    'n2.crt',
    'n2.key',
    'w.crt',
    'w.key',
  ]);
  assert.equal(out.created.length, 9);
  assert.equal(statSync(join(dir, 'etc/secret')).mode & 0o777, 0o600);

  const before = snapshot(join(dir, 'etc'));
  const again = cvserver('init', file);
  assert.notEqual(again.status, 0);
  assert.equal(again.stdout, '');
  assert.match(
    again.stderr,
    /^cvserver: cluster demo already has credentials \(.*secret exists and 8 more\); nothing changed/,
  );
  assert.equal(again.stderr.trim().split('\n').length, 1);
  assert.deepEqual(snapshot(join(dir, 'etc')), before);
});

test('cvserver init: a bad cluster.yaml gives one line and makes nothing', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cvserver-init-test-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = clusterFileIn(dir);
  writeFileSync(file, readFileSync(file, 'utf8').replace('replicas: [n1, n2]', 'replicas: [n1, n4]'));
  const r = cvserver('init', file);
  assert.equal(r.status, 1);
  assert.match(
    r.stderr,
    /^cvserver: .*cluster\.yaml:\d+:\d+: vservers\.demo\.volume\.replicas\.1: unknown node "n4"/,
  );
  assert.deepEqual(readdirSync(dir), ['cluster.yaml']);
});

test('cvserver init prints which files go to which node', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cvserver-init-test-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const r = cvserver('init', clusterFileIn(dir));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^cluster demo: 3 nodes/);
  assert.ok(
    r.stdout.includes(`  n2 (10.77.0.12): ${join(dir, 'etc/secret')} ${join(dir, 'etc/tls/ca.crt')}`),
  );
  assert.match(r.stdout, /keep .*ca\.key off the nodes/);
});
