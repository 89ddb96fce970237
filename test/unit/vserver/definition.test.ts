import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseYaml } from '../../../src/lib/config.ts';
import { UserError } from '../../../src/lib/errors.ts';
import { stopSignal, vserverDefinitionSchema } from '../../../src/vserver/definition.ts';

const base = 'name: web\nrootfs: /srv/web\n';

function errorOf(text: string): string {
  try {
    parseYaml(text, 'web.yaml', vserverDefinitionSchema);
  } catch (err) {
    assert.ok(err instanceof UserError);
    return err.message;
  }
  assert.fail('expected an error');
}

test('a full definition parses, with sizes in bytes and durations in ms', () => {
  const def = parseYaml(
    `${base}command: [/bin/sh]\nnetwork:\n  bridge: br0\n  addresses: [10.1.0.2/24]\n  gateway: 10.1.0.1\nlimits: {memory: 512M, cpu: 0.5, pids: 100}\nstop: {signal: SIGINT, timeout: 3s}\nhealth_checks:\n  - {type: http, port: 8080, interval: 500ms, retries: 2, start_period: 5}\nrestart: {max_restarts: 2, window: 1m}\n`,
    'web.yaml',
    vserverDefinitionSchema,
  );
  assert.equal(def.limits.memory, 512 * 1024 * 1024);
  assert.equal(def.stop.timeout, 3000);
  assert.deepEqual(def.health_checks[0], {
    type: 'http',
    port: 8080,
    path: '/',
    expect_status: 200,
    interval: 500,
    timeout: 5000,
    retries: 2,
    start_period: 5000,
  });
  assert.equal(def.restart.window, 60_000);
});

test('defaults: /sbin/init, SIGRTMIN+3 for an init, SIGTERM for a plain command', () => {
  const def = parseYaml(base, 'web.yaml', vserverDefinitionSchema);
  assert.deepEqual(def.command, ['/sbin/init']);
  assert.equal(stopSignal(def), 'SIGRTMIN+3');
  assert.equal(stopSignal({ ...def, command: ['/usr/sbin/httpd'] }), 'SIGTERM');
  assert.equal(stopSignal({ ...def, stop: { signal: 'INT', timeout: 1 } }), 'SIGINT');
});

test('bad input names the file, line and field', () => {
  assert.match(
    errorOf(`${base}limits:\n  memory: 12XB\n`),
    /^web\.yaml:4:\d+: limits\.memory: "12XB" is not a size/,
  );
  assert.match(errorOf(`${base}colour: red\n`), /^web\.yaml:3:\d+: \(top level\): unknown key "colour"/);
  assert.match(
    errorOf(`${base}network:\n  bridge: br0\n  addresses: [10.1.0.300/24]\n`),
    /web\.yaml:5:\d+: network\.addresses\.0: expected an IPv4 address with a prefix/,
  );
  assert.match(
    errorOf(`${base}network:\n  bridge: br0\n  addresses: [10.1.0.3/33]\n`),
    /network\.addresses\.0/,
  );
  assert.match(errorOf(`${base}network:\n  bridge: br0\n  addresses: [10.1.0.3]\n`), /network\.addresses\.0/);
  assert.match(
    errorOf(`${base}network:\n  bridge: br0\n  addresses: [10.1.0.3/24]\n  gateway: 10.2.0.1\n`),
    /network\.gateway: 10\.2\.0\.1 is not in the subnet/,
  );
  assert.match(errorOf('name: Web!\nrootfs: /x\n'), /^web\.yaml:1:\d+: name: expected a name/);
  assert.match(errorOf('name: web\nrootfs: relative\n'), /rootfs: expected an absolute path/);
  assert.match(errorOf(`${base}health_checks:\n  - {type: ftp}\n`), /health_checks\.0/);
  assert.match(errorOf(`${base}stop: {timeout: soon}\n`), /stop\.timeout: "soon" is not a duration/);
  assert.match(errorOf('name: [web\n'), /^web\.yaml:\d+:\d+: invalid YAML/);
});
