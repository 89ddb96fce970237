import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseYaml } from '../../../src/lib/config.ts';
import { vserverDefinitionSchema } from '../../../src/vserver/definition.ts';
import { buildOciConfig, signalNumber } from '../../../src/vserver/oci-config.ts';

const def = parseYaml(
  'name: web\nrootfs: /srv/web\ncommand: [/bin/sh]\nhostname: web.example\nenv: {A: b}\nlimits: {memory: 64M, cpu: 1.5, pids: 20}\n',
  'web.yaml',
  vserverDefinitionSchema,
);

interface Config {
  process: { args: string[]; env: string[]; noNewPrivileges: boolean; capabilities: { bounding: string[] } };
  hostname: string;
  mounts: { destination: string; options?: string[] }[];
  linux: {
    namespaces: { type: string }[];
    cgroupsPath: string;
    resources: {
      memory: { limit: number; swap: number };
      cpu: { quota: number; period: number };
      pids: { limit: number };
    };
    maskedPaths: string[];
    seccomp: { defaultAction: string; syscalls: { names: string[]; action: string }[] };
  };
}

const cfg = buildOciConfig(def, { cgroupsPath: '/cvserver-x/web' }) as unknown as Config;

test('namespaces, hostname, command and environment', () => {
  assert.deepEqual(cfg.linux.namespaces.map((n) => n.type).sort(), [
    'cgroup',
    'ipc',
    'mount',
    'network',
    'pid',
    'uts',
  ]);
  assert.equal(cfg.hostname, 'web.example');
  assert.deepEqual(cfg.process.args, ['/bin/sh']);
  assert.ok(cfg.process.env.includes('A=b'));
  assert.equal(cfg.linux.cgroupsPath, '/cvserver-x/web');
});

test('standard mounts with /sys read-only', () => {
  const dests = cfg.mounts.map((m) => m.destination);
  for (const d of ['/proc', '/sys', '/dev', '/dev/pts', '/dev/shm']) assert.ok(dests.includes(d), d);
  assert.ok(cfg.mounts.find((m) => m.destination === '/sys')?.options?.includes('ro'));
});

test('limits: memory without swap escape, CPU quota, pids', () => {
  assert.deepEqual(cfg.linux.resources.memory, { limit: 64 * 1024 * 1024, swap: 64 * 1024 * 1024 });
  assert.deepEqual(cfg.linux.resources.cpu, { quota: 150_000, period: 100_000 });
  assert.deepEqual(cfg.linux.resources.pids, { limit: 20 });
});

test('conservative privileges: no SYS_ADMIN/SYS_MODULE, no_new_privs, seccomp blocks modules and mount', () => {
  assert.equal(cfg.process.noNewPrivileges, true);
  const caps = cfg.process.capabilities.bounding;
  assert.ok(
    !caps.includes('CAP_SYS_ADMIN') && !caps.includes('CAP_SYS_MODULE') && !caps.includes('CAP_NET_ADMIN'),
  );
  assert.ok(cfg.linux.maskedPaths.includes('/proc/kcore'));
  const blocked = cfg.linux.seccomp.syscalls[0]?.names ?? [];
  for (const s of ['init_module', 'finit_module', 'kexec_load', 'mount']) assert.ok(blocked.includes(s), s);
});

test('allow.mount gives mount back', () => {
  const c = buildOciConfig({ ...def, allow: { mount: true } }, { cgroupsPath: '/x' }) as unknown as Config;
  assert.ok(!c.linux.seccomp.syscalls[0]?.names.includes('mount'));
  assert.ok(c.process.capabilities.bounding.includes('CAP_SYS_ADMIN'));
});

test('signal numbers for crun kill', () => {
  assert.equal(signalNumber('SIGTERM'), 15);
  assert.equal(signalNumber('KILL'), 9);
  assert.equal(signalNumber('SIGRTMIN+3'), 37);
});
