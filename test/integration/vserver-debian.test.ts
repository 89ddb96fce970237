import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { aptMirror } from '../../src/vserver/templates.ts';
import { busyboxDefinition, makeLab } from './vserver-helpers.ts';

/**
 * The debian template for real: debootstrap from the machine's apt mirror (about 30 s the first
 * time). The tarball is cached in a fixed place outside the test's state dir so later runs only unpack it.
 */
const CACHE = '/var/cache/cvserver-test-templates';

function mirrorReachable(): boolean {
  const { mirror, suite } = aptMirror();
  const r = spawnSync(process.execPath, [
    '-e',
    `fetch(${JSON.stringify(`${mirror}/dists/${suite}/Release`)}, {method: 'HEAD', signal: AbortSignal.timeout(10000)}).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))`,
  ]);
  return r.status === 0;
}

test('a vserver from the debian template runs Debian programs', async (t) => {
  if (!mirrorReachable()) {
    t.skip(`the Debian mirror ${aptMirror().mirror} cannot be reached, so debootstrap cannot run`);
    return;
  }
  const lab = makeLab(t);
  const def = busyboxDefinition(
    lab,
    'deb',
    4,
    'stop: {timeout: 1s}',
    'trap "exit 0" TERM; while true; do sleep 1; done & wait',
  );
  const f = lab.writeDefinition('deb', def);
  const created = spawnSync('bin/cvserver', ['vserver', 'create', f, '--template', 'debian'], {
    encoding: 'utf8',
    env: { ...process.env, CVSERVER_STATE_DIR: `${lab.dir}/state`, CVSERVER_TEMPLATE_CACHE: CACHE },
  });
  assert.equal(created.status, 0, created.stderr);
  assert.equal(lab.cli('vserver', 'start', 'deb').code, 0);
  const apt = lab.cli('vserver', 'exec', 'deb', '--', 'apt-get', '--version');
  assert.equal(apt.code, 0, apt.err);
  assert.match(apt.out, /^apt \d/);
  const sh = lab.cli(
    'vserver',
    'exec',
    'deb',
    '/bin/bash',
    '-c',
    'cat /etc/debian_version; echo $BASH_VERSION',
  );
  assert.equal(sh.code, 0, sh.err);
  assert.match(sh.out, /^\d+\.\d+/);
});
