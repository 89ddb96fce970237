import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { EXIT_NEEDS_OPERATOR } from '../../../src/agent/exit-status.ts';
import {
  envFileText,
  envValueProblem,
  fileAction,
  INSTALL_PATHS,
  planInstall,
  planUninstall,
  SHIPPED_UNIT,
} from '../../../src/agent/systemd-install.ts';

const ROOT = join(import.meta.dirname, '../../..');
const WITNESS = join(ROOT, 'test/fixtures/cluster/two-nodes-witness.yaml');
const UNIT = readFileSync(SHIPPED_UNIT, 'utf8');

function cvserver(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(join(ROOT, 'bin/cvserver'), args, { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A machine's root with /etc/cvserver/cluster.yaml (nodes n1, n2, w) and nothing else. */
function machine(t: { after: (f: () => void) => void }): string {
  const root = mkdtempSync(join(tmpdir(), 'cvserver-install-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'etc/cvserver'), { recursive: true });
  writeFileSync(join(root, 'etc/cvserver/cluster.yaml'), readFileSync(WITNESS, 'utf8'));
  return root;
}

const at = (root: string, p: string) => join(root, p);

test('the shipped unit passes systemd-analyze verify without a warning, with what the agent relies on', () => {
  const r = spawnSync('systemd-analyze', ['verify', SHIPPED_UNIT], { encoding: 'utf8' });
  assert.equal(r.error, undefined, 'systemd-analyze is missing (scripts/setup installs systemd)');
  // verify exits 0 even for unknown keys or bad values: its output is the verdict.
  assert.equal(`${r.stdout}${r.stderr}`, '');
  assert.equal(r.status, 0);
  const keys = new Map(
    UNIT.split('\n')
      .filter((l) => /^\w+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  assert.equal(keys.get('Type'), 'notify');
  assert.equal(keys.get('NotifyAccess'), 'all');
  assert.equal(keys.get('Restart'), 'always');
  assert.equal(keys.get('KillMode'), 'process');
  // The one exit that restarting cannot cure (node removed, newer cluster format) stops the loop.
  assert.equal(keys.get('RestartPreventExitStatus'), String(EXIT_NEEDS_OPERATOR));
  assert.match(keys.get('WatchdogSec') ?? '', /^\d+s$/);
  assert.equal(keys.get('EnvironmentFile'), INSTALL_PATHS.env);
  assert.equal(
    keys.get('ExecStart'),
    `${INSTALL_PATHS.command} agent --config \${CVSERVER_CONFIG} --node \${CVSERVER_NODE}`,
  );
  for (const sandbox of ['ProtectSystem', 'PrivateDevices', 'PrivateTmp', 'NoNewPrivileges', 'DevicePolicy'])
    assert.ok(!keys.has(sandbox), `${sandbox} would break mounts, loop devices or namespaces`);
});

test('plans: systemctl when systemd runs; a wants link of our own when it does not; nothing run under --root', () => {
  assert.equal(fileAction(null, 'a', false), 'create');
  assert.equal(fileAction('a', 'a', false), 'unchanged');
  assert.equal(fileAction('b', 'a', false), 'conflict');
  assert.equal(fileAction('b', 'a', true), 'replace');

  const base = { unit: 'create', env: 'create', enable: false, now: false, wantsLink: null } as const;
  assert.deepEqual(planInstall({ ...base, systemd: 'running' }).commands, [['systemctl', 'daemon-reload']]);
  assert.deepEqual(planInstall({ ...base, systemd: 'running', enable: true, now: true }).commands, [
    ['systemctl', 'daemon-reload'],
    ['systemctl', 'enable', '--now', 'cvserver-agent.service'],
  ]);
  assert.deepEqual(planInstall({ ...base, systemd: 'running', now: true }).commands[1], [
    'systemctl',
    'start',
    'cvserver-agent.service',
  ]);
  const off = planInstall({ ...base, systemd: 'not-running', enable: true, now: true });
  assert.deepEqual(off.commands, []);
  assert.equal(off.link, true);
  assert.match(off.notes.join('\n'), /systemd is not running/);
  assert.match(off.notes.join('\n'), /--now: cannot start/);
  assert.equal(
    planInstall({ ...base, systemd: 'offline-root', enable: true, wantsLink: INSTALL_PATHS.unit }).link,
    false,
  );

  const u = { unit: 'unchanged', envPresent: true, wantsLink: INSTALL_PATHS.unit, now: false } as const;
  const running = planUninstall({ ...u, systemd: 'running' });
  assert.deepEqual(running.before, [['systemctl', 'disable', 'cvserver-agent.service']]);
  assert.deepEqual(running.after, [['systemctl', 'daemon-reload']]);
  assert.equal(running.removeLink, false); // systemctl disable removes it
  const root = planUninstall({ ...u, systemd: 'offline-root' });
  assert.deepEqual(
    [root.before, root.after, root.removeLink, root.removeUnit, root.removeEnv],
    [[], [], true, true, true],
  );

  assert.equal(envValueProblem('/etc/cvserver/cluster.yaml'), undefined);
  assert.ok(envValueProblem('/etc/my cluster.yaml'));
  assert.ok(envValueProblem('/etc/$x.yaml'));
  assert.equal(
    envFileText('/c.yaml', 'n1').split('\n').slice(1).join('\n'),
    'CVSERVER_CONFIG=/c.yaml\nCVSERVER_NODE=n1\n',
  );
});

test('install --root writes the shipped unit and the environment file, enables it; a second run changes nothing', (t) => {
  const root = machine(t);
  const r = cvserver('agent', 'install', '--root', root, '--node', 'n2', '--enable', '--json');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    unit: { action: string };
    env: { action: string };
    linked: string;
    systemd: string;
  };
  assert.deepEqual(
    [out.unit.action, out.env.action, out.linked, out.systemd],
    ['create', 'create', INSTALL_PATHS.wants, 'offline-root'],
  );
  assert.equal(readFileSync(at(root, INSTALL_PATHS.unit), 'utf8'), UNIT);
  assert.equal(
    readFileSync(at(root, INSTALL_PATHS.env), 'utf8'),
    envFileText(INSTALL_PATHS.defaultConfig, 'n2'),
  );
  assert.equal(readlinkSync(at(root, INSTALL_PATHS.wants)), INSTALL_PATHS.unit);

  const again = cvserver('agent', 'install', '--root', root, '--node', 'n2', '--enable');
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /cvserver-agent\.service: unchanged/);
  assert.match(again.stdout, /agent\.env: unchanged/);
  assert.doesNotMatch(again.stdout, /linked/);
});

test('install refuses to overwrite what differs without --force, and names the file', (t) => {
  const root = machine(t);
  assert.equal(cvserver('agent', 'install', '--root', root, '--node', 'n1').status, 0);
  const edited = `${UNIT}\n# a local edit\n`;
  writeFileSync(at(root, INSTALL_PATHS.unit), edited);

  const r = cvserver('agent', 'install', '--root', root, '--node', 'n2');
  assert.equal(r.status, 1);
  assert.match(
    r.stderr,
    new RegExp(`${at(root, INSTALL_PATHS.unit)} differs from the unit this cvserver ships.*--force`),
  );
  assert.match(
    r.stderr,
    /agent\.env differs from what would be written \(CVSERVER_CONFIG=\/etc\/cvserver\/cluster\.yaml, CVSERVER_NODE=n2\)/,
  );
  assert.equal(readFileSync(at(root, INSTALL_PATHS.unit), 'utf8'), edited, 'nothing written');
  assert.match(readFileSync(at(root, INSTALL_PATHS.env), 'utf8'), /CVSERVER_NODE=n1/);

  const dry = cvserver('agent', 'install', '--root', root, '--node', 'n2', '--force', '--dry-run');
  assert.equal(dry.status, 0, dry.stderr);
  assert.match(dry.stdout, /cvserver-agent\.service: would replace/);
  assert.match(dry.stdout, /dry run: nothing written/);
  assert.equal(readFileSync(at(root, INSTALL_PATHS.unit), 'utf8'), edited, 'a dry run writes nothing');

  const forced = cvserver('agent', 'install', '--root', root, '--node', 'n2', '--force');
  assert.equal(forced.status, 0, forced.stderr);
  assert.equal(readFileSync(at(root, INSTALL_PATHS.unit), 'utf8'), UNIT);
  assert.match(readFileSync(at(root, INSTALL_PATHS.env), 'utf8'), /CVSERVER_NODE=n2/);
});

test('install checks the configuration and the node first: clear errors, nothing written', (t) => {
  const root = machine(t);
  const unknown = cvserver('agent', 'install', '--root', root, '--node', 'n9');
  assert.equal(unknown.status, 1);
  assert.match(
    unknown.stderr,
    /cluster\.yaml: no node "n9" in nodes \(n1, n2, w\): give this node's name with --node/,
  );

  const missing = cvserver(
    'agent',
    'install',
    '--root',
    root,
    '--node',
    'n1',
    '--config',
    '/etc/cvserver/other.yaml',
  );
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /other\.yaml: no such file/);

  writeFileSync(at(root, 'etc/cvserver/bad.yaml'), 'cluster: demo\nnodes: 3\n');
  const bad = cvserver(
    'agent',
    'install',
    '--root',
    root,
    '--node',
    'n1',
    '--config',
    '/etc/cvserver/bad.yaml',
  );
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /bad\.yaml:\d+:\d+: nodes:/);

  const relative = cvserver('agent', 'install', '--root', root, '--node', 'n1', '--config', 'cluster.yaml');
  assert.equal(relative.status, 1);
  assert.match(relative.stderr, /with --root, give the path as that machine sees it/);

  assert.ok(!existsSync(at(root, 'etc/systemd')), 'nothing written');
  assert.ok(!existsSync(at(root, INSTALL_PATHS.env)));
});

test('uninstall removes what install wrote; an edited unit only with --force', (t) => {
  const root = machine(t);
  assert.equal(cvserver('agent', 'install', '--root', root, '--node', 'w', '--enable').status, 0);
  writeFileSync(at(root, INSTALL_PATHS.unit), `${UNIT}# edited\n`);
  const refused = cvserver('agent', 'uninstall', '--root', root);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /differs from the unit this cvserver ships.*--force removes it anyway/);
  assert.ok(existsSync(at(root, INSTALL_PATHS.unit)));

  const r = cvserver('agent', 'uninstall', '--root', root, '--force', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as { removed: string[] }).removed, [
    INSTALL_PATHS.wants,
    INSTALL_PATHS.unit,
    INSTALL_PATHS.env,
  ]);
  for (const p of [INSTALL_PATHS.wants, INSTALL_PATHS.unit, INSTALL_PATHS.env])
    assert.ok(!existsSync(at(root, p)), p);
  assert.ok(existsSync(at(root, 'etc/cvserver/cluster.yaml')), 'the configuration is not ours to remove');

  const none = cvserver('agent', 'uninstall', '--root', root);
  assert.equal(none.status, 0);
  assert.match(none.stdout, /nothing installed/);
});

test('the agent itself still requires --config; its subcommands do not', () => {
  const r = cvserver('agent');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /required option '--config <file>' not specified/);
  assert.equal(cvserver('agent', 'guard', '--help').status, 0);
});
