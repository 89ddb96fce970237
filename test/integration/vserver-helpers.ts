import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'bin/cvserver');

export interface Lab {
  dir: string;
  netns: string;
  bridge: string;
  /** 10.<a>.<b>.x: a /24 unique to the run, living only on the bridge inside the lab's netns. */
  subnet: string;
  cli(...args: string[]): { code: number; out: string; err: string };
  /** A command run inside the lab's network namespace (the "host side" of the bridge). */
  inNetns(cmd: string, ...args: string[]): { code: number; out: string; err: string };
  writeDefinition(name: string, yaml: string): string;
  /** GET from inside the lab's network namespace; the body, or '' on any failure. */
  httpGet(url: string): string;
}

/**
 * A private state dir, and a network namespace holding a bridge with a 10.x/24 address and no route out,
 * all removed when the test ends (the vservers first, by `destroy`).
 */
export function makeLab(t: TestContext): Lab {
  const dir = mkdtempSync(join(tmpdir(), 'cvs-vserver-'));
  const tag = `${process.pid.toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`.slice(-6);
  const netns = `cvst-${tag}`;
  const bridge = `cvbr${tag}`;
  const a = 100 + (process.pid % 100);
  const b = Math.floor(Math.random() * 250) + 1;
  const subnet = `10.${a}.${b}`;
  const run = (cmd: string, args: string[], env?: NodeJS.ProcessEnv) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', env: env ?? process.env, timeout: 120_000 });
    return { code: r.status ?? 1, out: r.stdout ?? '', err: r.stderr ?? '' };
  };
  const env = { ...process.env, CVSERVER_STATE_DIR: join(dir, 'state') };
  const lab: Lab = {
    dir,
    netns,
    bridge,
    subnet,
    cli: (...args) => run(CLI, args, env),
    inNetns: (cmd, ...args) => run('nsenter', [`--net=/run/netns/${netns}`, cmd, ...args]),
    httpGet: (url) => {
      const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(2000) }).then(r => r.text()).then(b => process.stdout.write(b), () => {})`;
      return run('nsenter', [`--net=/run/netns/${netns}`, process.execPath, '-e', script]).out;
    },
    writeDefinition: (name, yaml) => {
      const f = join(dir, `${name}.yaml`);
      writeFileSync(f, yaml);
      return f;
    },
  };
  const must = (cmd: string, args: string[]) => {
    const r = run(cmd, args);
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.err}`);
  };
  t.after(() => {
    const list = run(CLI, ['vserver', 'list', '--json'], env);
    try {
      for (const v of JSON.parse(list.out) as { name: string }[])
        run(CLI, ['vserver', 'destroy', v.name], env);
    } catch {}
    run('ip', ['netns', 'del', netns]);
    rmSync(dir, { recursive: true, force: true });
  });
  must('ip', ['netns', 'add', netns]);
  must('ip', ['-n', netns, 'link', 'add', bridge, 'type', 'bridge']);
  must('ip', ['-n', netns, 'addr', 'add', `${subnet}.1/24`, 'dev', bridge]);
  must('ip', ['-n', netns, 'link', 'set', bridge, 'up']);
  must('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  return lab;
}

export function busyboxDefinition(
  lab: Lab,
  name: string,
  ip: number,
  extra: string,
  command: string,
): string {
  return [
    `name: ${name}`,
    `rootfs: ${lab.dir}/rootfs-${name}`,
    `command: ["/bin/sh", "-c", ${JSON.stringify(command)}]`,
    'network:',
    `  bridge: ${lab.bridge}`,
    `  netns: ${lab.netns}`,
    `  addresses: [${lab.subnet}.${ip}/24]`,
    `  gateway: ${lab.subnet}.1`,
    extra,
  ].join('\n');
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await sleep(100);
  }
}
