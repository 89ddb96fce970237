/**
 * bench/vserver: for the busybox template, start-to-healthy time and stop time (median of several
 * runs) through the real CLI, and the idle memory a running vserver costs outside its own processes
 * (its supervisor; crun itself does not stay resident). Baseline in the same run: the same busybox
 * httpd started as a plain process in the same network namespace, until it answers.
 * Run: scripts/node bench/vserver.ts   (root; uses a private state dir and network namespace)
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { probeTcp } from '../src/vserver/probe.ts';

const RUNS = Number(process.env.RUNS ?? 5);
const ROOT = new URL('../', import.meta.url).pathname;
const CLI = join(ROOT, 'bin/cvserver');
const dir = mkdtempSync(join(tmpdir(), 'cvs-bench-'));
const state = join(dir, 'state');
const env = { ...process.env, CVSERVER_STATE_DIR: state };
const tag = process.pid.toString(36).slice(-5);
const netns = `cvsb-${tag}`;
const bridge = `cvbb${tag}`;
const subnet = `10.${200 + (process.pid % 50)}.${process.pid % 250}`;

const sh = (cmd: string, args: string[], e: NodeJS.ProcessEnv = process.env) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: e });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const cli = (...args: string[]) => sh(CLI, args, env);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

function healthyCount(name: string): number {
  const f = join(state, 'vservers', name, 'events.jsonl');
  if (!existsSync(f)) return 0;
  return readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l.includes('"health-healthy"')).length;
}

async function main(): Promise<void> {
  sh('ip', ['netns', 'add', netns]);
  sh('ip', ['-n', netns, 'link', 'add', bridge, 'type', 'bridge']);
  sh('ip', ['-n', netns, 'addr', 'add', `${subnet}.1/24`, 'dev', bridge]);
  sh('ip', ['-n', netns, 'link', 'set', bridge, 'up']);
  sh('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  const names = ['b1', 'b2', 'b3'];
  names.forEach((name, i) => {
    const def = [
      `name: ${name}`,
      `rootfs: ${dir}/rootfs-${name}`,
      'command: ["/bin/sh", "-c", "echo ok > /var/www/index.html; trap \'exit 0\' TERM; httpd -f -p 80 -h /var/www & wait"]',
      'network:',
      `  bridge: ${bridge}`,
      `  netns: ${netns}`,
      `  addresses: [${subnet}.${10 + i}/24]`,
      'stop: {timeout: 5s}',
      'health_checks:',
      '  - {type: http, port: 80, interval: 100ms, timeout: 1s, retries: 3}',
    ].join('\n');
    writeFileSync(join(dir, `${name}.yaml`), def);
    cli('vserver', 'create', join(dir, `${name}.yaml`), '--template', 'busybox');
  });

  // Baseline: the bare service as a plain host process on loopback, until a TCP connect succeeds.
  const bare: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const port = 20000 + (process.pid % 10000) + i;
    const t0 = performance.now();
    const p = spawn('/bin/busybox', ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', dir]);
    while (!(await probeTcp('127.0.0.1', port, 1000)).ok) await sleep(5);
    bare.push(performance.now() - t0);
    p.kill('SIGKILL');
    await new Promise((r) => p.once('exit', r));
  }

  const start: number[] = [];
  const stop: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const before = healthyCount('b1');
    const t0 = performance.now();
    cli('vserver', 'start', 'b1');
    while (healthyCount('b1') <= before) await sleep(10);
    start.push(performance.now() - t0);
    const t1 = performance.now();
    cli('vserver', 'stop', 'b1');
    stop.push(performance.now() - t1);
  }

  // Idle overhead: start three, let them settle, measure what runs outside their cgroups.
  for (const n of names) cli('vserver', 'start', n);
  await sleep(2000);
  const overhead: number[] = [];
  const inside: number[] = [];
  for (const n of names) {
    const st = JSON.parse(cli('vserver', 'status', n, '--json')) as { pid: number };
    const rt = JSON.parse(readFileSync(join(state, 'vservers', n, 'runtime.json'), 'utf8')) as {
      supervisorPid: number;
    };
    overhead.push(rssKiB(rt.supervisorPid));
    inside.push(rssKiB(st.pid));
  }
  for (const n of names) cli('vserver', 'stop', n);

  const ms = (x: number) => `${x.toFixed(0)} ms`;
  console.log(`vserver bench (busybox template, ${RUNS} runs, medians)`);
  console.log(`  start → healthy (CLI start + crun + veth + first http check): ${ms(median(start))}`);
  console.log(`  baseline: bare busybox httpd on loopback answering:              ${ms(median(bare))}`);
  console.log(`  ratio start-to-healthy / baseline: ${(median(start) / median(bare)).toFixed(1)}×`);
  console.log(`  stop (SIGTERM honoured, crun delete, veth removed):            ${ms(median(stop))}`);
  console.log(
    `  idle overhead per vserver outside its processes (supervisor RSS): ${(median(overhead) / 1024).toFixed(1)} MiB` +
      ` (its own PID 1 RSS: ${(median(inside) / 1024).toFixed(1)} MiB)`,
  );
}

try {
  await main();
} finally {
  for (const n of ['b1', 'b2', 'b3']) spawnSync(CLI, ['vserver', 'destroy', n], { env });
  spawnSync('ip', ['netns', 'del', netns]);
  rmSync(dir, { recursive: true, force: true });
}
