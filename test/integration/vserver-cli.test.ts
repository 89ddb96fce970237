import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeLab } from './vserver-helpers.ts';

test('bad input: a clear error naming the field, non-zero exit, nothing created', async (t) => {
  const lab = makeLab(t);
  const rootfs = join(lab.dir, 'rootfs');
  mkdirSync(rootfs);
  const state = join(lab.dir, 'state', 'vservers');
  const cases: [string, string, RegExp][] = [
    [
      'invalid-yaml',
      `name: a\nrootfs: ${rootfs}\ncommand: [/bin/sh\n`,
      /invalid-yaml\.yaml:\d+:\d+: invalid YAML/,
    ],
    [
      'unknown-key',
      `name: a\nrootfs: ${rootfs}\ncolour: red\n`,
      /unknown-key\.yaml:3:\d+: \(top level\): unknown key "colour"/,
    ],
    [
      'bad-ip',
      `name: a\nrootfs: ${rootfs}\nnetwork:\n  bridge: br0\n  addresses: [10.0.0.256/24]\n`,
      /bad-ip\.yaml:5:\d+: network\.addresses\.0: expected an IPv4 address with a prefix length/,
    ],
    [
      'bad-prefix',
      `name: a\nrootfs: ${rootfs}\nnetwork:\n  bridge: br0\n  addresses: [10.0.0.2/40]\n`,
      /bad-prefix\.yaml:5:\d+: network\.addresses\.0: expected an IPv4 address with a prefix length/,
    ],
    [
      'bad-memory',
      `name: a\nrootfs: ${rootfs}\nlimits:\n  memory: 12XB\n`,
      /bad-memory\.yaml:4:\d+: limits\.memory: "12XB" is not a size/,
    ],
    ['missing-rootfs', `name: a\nrootfs: ${lab.dir}/nowhere\n`, /rootfs: .*nowhere does not exist/],
  ];
  for (const [file, yaml, expected] of cases) {
    const r = lab.cli('vserver', 'create', lab.writeDefinition(file, yaml));
    assert.notEqual(r.code, 0, file);
    assert.match(r.err.trim(), expected, file);
    assert.equal(r.err.trim().split('\n').length, 1, `${file}: one line`);
    assert.ok(!existsSync(state) || readdirSync(state).length === 0, `${file}: nothing created`);
  }
  assert.ok(!existsSync(join(lab.dir, 'nowhere')));

  const ok = lab.writeDefinition('ok', `name: dup\nrootfs: ${rootfs}\ncommand: [/bin/sh]\n`);
  assert.equal(lab.cli('vserver', 'create', ok).code, 0);
  const dup = lab.cli('vserver', 'create', ok);
  assert.notEqual(dup.code, 0);
  assert.match(dup.err, /name: a vserver named "dup" already exists/);

  const unknown = lab.cli('vserver', 'status', 'nosuch');
  assert.notEqual(unknown.code, 0);
  assert.match(unknown.err, /no vserver named "nosuch"/);
  const tmpl = lab.cli('vserver', 'create', ok, '--template', 'gentoo');
  assert.match(tmpl.err, /unknown template "gentoo"/);
});
