/**
 * End to end in a real lab: a bad cluster.yaml (unknown field, unsafe timing, unknown node in a
 * vserver's replicas) is refused by `cvserver apply` with one line naming file:line:field and stores
 * nothing; etcd refuses every client without the cluster's certificates.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { run, TestLab } from '../helpers/lab.ts';

test('bad cluster.yaml is refused with file:line:field and nothing is stored; etcd refuses clients without the certificates', async (t) => {
  const lab = await TestLab.up(t, { letter: 'h' });
  const good = readFileSync(join(lab.dir, 'cluster.yaml'), 'utf8');
  const appliedCopy = join(lab.dir, 'nodes', 'n1', 'cluster.applied.yaml');
  const storedBefore = readFileSync(appliedCopy, 'utf8');
  const eventsBefore = (await lab.events()).length;

  const lineOf = (text: string, needle: string) =>
    text.split('\n').findIndex((l) => l.trimStart().startsWith(needle)) + 1;
  const cases: { name: string; yaml: string; field: RegExp; line: number | number[] }[] = [];
  {
    const yaml = good.replace('  heartbeat_ms: 50\n', '  heartbeat_ms: 50\n  bogus_field: 1\n');
    cases.push({ name: 'unknown field', yaml, field: /bogus_field/, line: lineOf(yaml, 'bogus_field') });
  }
  {
    const yaml = good.replace(/fence_margin: [0-9.]+/, 'fence_margin: 1.5');
    assert.notEqual(yaml, good);
    cases.push({
      name: 'unsafe timing',
      yaml,
      field: /fence_margin|lease_ttl|timing/,
      // The combination is unsafe: the error may point at the timing block or at any of its keys.
      line: Array.from(
        { length: lineOf(yaml, 'fence_margin') - lineOf(yaml, 'timing:') + 1 },
        (_, i) => lineOf(yaml, 'timing:') + i,
      ),
    });
  }
  {
    const yaml = good.replace('        - n3\n      port:', '        - n9\n      port:');
    assert.notEqual(yaml, good);
    cases.push({ name: 'unknown node in replicas', yaml, field: /replicas/, line: lineOf(yaml, '- n9') });
  }
  for (const c of cases) {
    const file = join(lab.dir, `bad-${c.name.replace(/ /g, '-')}.yaml`);
    writeFileSync(file, c.yaml);
    const r = await lab.exec('n1', ['apply', file]);
    const err = r.stderr.trim();
    assert.notEqual(r.status, 0, `${c.name}: non-zero exit`);
    assert.equal(err.split('\n').length, 1, `${c.name}: one line: ${err}`);
    assert.match(
      err,
      new RegExp(`${file.replace(/[.]/g, '\\.')}:(${[c.line].flat().join('|')})(:\\d+)?\\b`),
      `${c.name}: file:line: ${err}`,
    );
    assert.match(err, c.field, `${c.name}: names the field: ${err}`);
    t.diagnostic(`${c.name}: ${err}`);
  }
  assert.equal(readFileSync(appliedCopy, 'utf8'), storedBefore, 'the stored configuration is unchanged');
  const s = await lab.status();
  assert.deepEqual(
    s.vservers.map((v) => v.name),
    ['demo'],
  );
  assert.deepEqual(
    s.nodes.map((n) => n.name),
    ['n1', 'n2', 'n3'],
  );
  const newEvents = (await lab.events()).slice(eventsBefore);
  assert.deepEqual(
    newEvents.filter((e) => /appl|config/i.test(e.text)),
    [],
    'no configuration event',
  );

  // etcd: every member refuses a client without the cluster's certificates, with or without verifying
  // the server; the same request with them works (so the refusal is about the certificate).
  // etcdctl 3.4 speaks the v3 API by default (ETCDCTL_API=3).
  const etcdctl = (args: string[]) =>
    run(
      'etcdctl',
      [
        '--dial-timeout=2s',
        '--command-timeout=3s',
        ...args,
        'get',
        '/',
        '--prefix',
        '--keys-only',
        '--limit=1',
      ],
      20_000,
    );
  const tls = join(lab.dir, 'tls');
  for (const n of lab.nodes) {
    const ep = `--endpoints=https://${lab.nodeAddress(n)}:2379`;
    const plain = await etcdctl([ep]);
    assert.notEqual(plain.status, 0, `${n}: refused without certificates: ${plain.stdout}`);
    const insecure = await etcdctl([ep, '--insecure-skip-tls-verify']);
    assert.notEqual(insecure.status, 0, `${n}: refused with --insecure-skip-tls-verify: ${insecure.stdout}`);
    const caOnly = await etcdctl([ep, `--cacert=${tls}/ca.crt`]);
    assert.notEqual(
      caOnly.status,
      0,
      `${n}: refused with the CA but no client certificate: ${caOnly.stdout}`,
    );
    const withCerts = await etcdctl([
      ep,
      `--cacert=${tls}/ca.crt`,
      `--cert=${tls}/n1.crt`,
      `--key=${tls}/n1.key`,
    ]);
    assert.equal(withCerts.status, 0, `${n}: works with the cluster's certificates: ${withCerts.stderr}`);
  }
});
