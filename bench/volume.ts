/**
 * bench/volume: fio on ext4 over (a) a loop device on a plain file with direct I/O, the baseline,
 * (b) our FUSE volume (loop with direct I/O on the FUSE device file), (c) a replicated volume with
 * 2 replicas and (d) with 3 replicas, protocol C over loopback (every replica's data file on this
 * machine's one disk), in one run.
 * Prints MB/s for 1 MiB sequential writes with fsync, IOPS for 4 KiB random writes with an fsync
 * per write, the ratios b/a, c/b, c/a, d/b, the primary daemon's peak RSS, and the resync figures
 * (a replica away while the primary writes: dirty bytes vs bytes sent, resync MB/s).
 * (c) has a diskless tiebreaker as its third voter. (c') is (c) with the peer's data on tmpfs: a
 * stand-in for the peer machine's own disk, so the figure shows what replication itself costs
 * rather than two replicas' fdatasyncs queueing on this machine's single disk.
 *   scripts/node bench/volume.ts [--seconds 10] [--size 1G] [--only a,b,c,c-ram,d]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    size: { type: 'string', default: '1G' },
    only: { type: 'string', default: 'a,b,c,c-ram,d' },
  },
});
const only = new Set(values.only.split(','));
const seconds = values.seconds;
const root = join(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'cvs-bench-'));
const env = { ...process.env, CVSERVER_STATE_DIR: join(work, 'state') };
const cleanups: Array<() => void> = [];

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env });
}

interface Figures {
  seqMBps: number;
  randIops: number;
  /**
   * FUSE WRITEs per FSYNC the daemon saw in each job: 1 when a guest fsync is WRITE + FSYNC, 1.5
   * when every one also commits ext4's journal (WRITE, WRITE journal, FSYNC, WRITE commit, FSYNC).
   */
  mix?: { seq: number; rand: number };
}

type Counters = () => { writes: number; fsyncs: number };

const fioCommon = (dir: string) => [
  '--ioengine=psync',
  `--directory=${dir}`,
  '--output-format=json',
  '--group_reporting',
];

/** Sequential 1 MiB writes with an fsync each, MB/s. */
function fioSeq(dir: string, secs: string): number {
  const seq = JSON.parse(
    sh('fio', [
      ...fioCommon(dir),
      '--name=seq',
      '--rw=write',
      '--bs=1M',
      '--size=256M',
      '--fsync=1',
      // Time-based: one pass over a fresh file mostly measures the first touch of its pages.
      '--time_based',
      `--runtime=${secs}`,
    ]),
  );
  return seq.jobs[0].write.bw_bytes / 1e6;
}

function fio(dir: string, counters?: Counters): Figures {
  const common = fioCommon(dir);
  const c0 = counters?.();
  const seqMBps = fioSeq(dir, seconds);
  const c1 = counters?.();
  // The random job overwrites a file written once beforehand: on a new file fio would fallocate
  // (unwritten extents), and every fsync would then also commit the conversion of the block it
  // wrote, so the figure would measure ext4's first touch rather than the volume.
  sh('dd', ['if=/dev/zero', `of=${join(dir, 'rand.0.0')}`, 'bs=1M', 'count=64', 'conv=fsync', 'status=none']);
  const rand = JSON.parse(
    sh('fio', [
      ...common,
      '--name=rand',
      '--rw=randwrite',
      '--bs=4k',
      '--size=64M',
      '--fsync=1',
      '--time_based',
      `--runtime=${seconds}`,
    ]),
  );
  const c2 = counters?.();
  const perFsync = (x: ReturnType<Counters>, y: ReturnType<Counters>) =>
    (y.writes - x.writes) / Math.max(1, y.fsyncs - x.fsyncs);
  return {
    seqMBps,
    randIops: rand.jobs[0].write.iops,
    ...(c0 && c1 && c2 ? { mix: { seq: perFsync(c0, c1), rand: perFsync(c1, c2) } } : {}),
  };
}

function baseline(): Figures {
  const file = join(work, 'plain.img');
  const mnt = join(work, 'plain');
  mkdirSync(mnt);
  sh('truncate', ['-s', values.size, file]);
  const loop = sh('losetup', ['--find', '--show', '--direct-io=on', file]).trim();
  cleanups.push(() => spawnSync('losetup', ['-d', loop]));
  sh('mkfs.ext4', ['-q', '-F', loop]);
  sh('mount', [loop, mnt]);
  cleanups.push(() => spawnSync('umount', [mnt]));
  try {
    return fio(mnt);
  } finally {
    cleanups.pop()!();
  }
}

interface Resync {
  dirtyBytes: number;
  resyncedBytes: number;
  wireBytes: number;
  ms: number;
  /** Seq writes (fio, 5 s) while a 256 MiB resync runs, and how long that resync took. */
  underLoad: { appMBps: number; resyncBytes: number; resyncMs: number };
}

/**
 * A replicated volume of `replicas` nodes on loopback (each its own state dir), fio on the primary,
 * then the resync figures: one secondary goes down, the primary writes 64 MiB, it comes back.
 */
function replicated(replicas: number, peersInRam = false): Figures & { rssMB: number; resync: Resync } {
  const cvs = join(root, 'bin', 'cvserver');
  const base = join(work, `r${replicas}${peersInRam ? 'ram' : ''}`);
  // This machine has one disk: every replica's fdatasync lands on it. With peersInRam the peers'
  // state lives on tmpfs (/dev/shm), standing in for the other machines' own disks.
  const ramBase = mkdtempSync('/dev/shm/cvs-bench-');
  cleanups.push(() => rmSync(ramBase, { recursive: true, force: true }));
  const secret = join(base, 'secret');
  mkdirSync(base, { recursive: true });
  writeFileSync(secret, randomBytes(32).toString('base64'), { mode: 0o600 });
  const port0 = 21000 + Math.floor(Math.random() * 20000);
  // Two replicas get a diskless tiebreaker, as in production: without it either one's absence
  // loses quorum and the primary suspends I/O (the resync measurement takes one replica away).
  const nodes = Array.from({ length: replicas + (replicas === 2 ? 1 : 0) }, (_, i) => ({
    name: i === replicas ? 'tb' : `n${i}`,
    state: join(peersInRam && i > 0 ? ramBase : base, `n${i}`),
    addr: `127.0.0.1:${port0 + i}`,
    tiebreaker: i === replicas,
  }));
  const on = (n: (typeof nodes)[number], args: string[]) =>
    execFileSync(cvs, args, { encoding: 'utf8', env: { ...process.env, CVSERVER_STATE_DIR: n.state } });
  // The primary goes down first: taking its peers away first would cost it quorum, and its
  // unmount would then wait (suspended I/O) for them forever.
  cleanups.push(() => {
    for (const n of nodes)
      spawnSync(cvs, ['volume', 'down', 'bench'], {
        env: { ...process.env, CVSERVER_STATE_DIR: n.state },
        timeout: 120_000,
      });
  });
  let uuid = '';
  for (const n of nodes) {
    const args = ['volume', 'create', 'bench', '--size', values.size, '--node', n.name, '--listen', n.addr];
    for (const p of nodes)
      if (p !== n) args.push(p.tiebreaker ? '--tiebreaker' : '--peer', `${p.name}=${p.addr}`);
    args.push('--secret-file', secret, '--json');
    if (uuid) args.push('--uuid', uuid, '--blank');
    if (n.tiebreaker) args.push('--diskless');
    uuid = JSON.parse(on(n, args)).uuid;
    on(n, ['volume', 'up', 'bench']);
  }
  const primary = nodes[0]!;
  const mnt = join(base, 'mnt');
  mkdirSync(mnt);
  on(primary, ['volume', 'primary', 'bench', '--mkfs', 'ext4', '--mount', mnt]);
  const status = () => JSON.parse(on(primary, ['volume', 'status', 'bench', '--json']));
  const pid = status().pid as number;
  const f = fio(mnt, () => status().daemon.counters);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));

  // Resync: the last secondary is away while 64 MiB are written.
  const away = nodes[replicas - 1]!;
  const peerOf = () =>
    status().daemon.replication.peers.find((p: { node: string }) => p.node === away.name) as {
      connection: string;
      outOfSyncBytes: number;
      bytesSent: number;
      resync?: unknown;
      lastResync?: { bytes: number; ms: number };
    };
  on(away, ['volume', 'down', 'bench']);
  waitFor(() => peerOf().connection !== 'Connected');
  sh('dd', ['if=/dev/urandom', `of=${join(mnt, 'while-away')}`, 'bs=1M', 'count=64', 'conv=fsync']);
  waitFor(() => peerOf().outOfSyncBytes >= 64 * 1024 * 1024);
  const before = peerOf();
  on(away, ['volume', 'up', 'bench']);
  waitFor(() => {
    const p = peerOf();
    return p.connection === 'Connected' && p.outOfSyncBytes === 0 && !p.resync && p.lastResync !== undefined;
  });
  const after = peerOf();

  // Application writes while a resync runs: the replica misses 256 MiB, then returns under load.
  on(away, ['volume', 'down', 'bench']);
  waitFor(() => peerOf().connection !== 'Connected');
  sh('dd', ['if=/dev/urandom', `of=${join(mnt, 'while-away-2')}`, 'bs=1M', 'count=256', 'conv=fsync']);
  waitFor(() => peerOf().outOfSyncBytes >= 256 * 1024 * 1024);
  on(away, ['volume', 'up', 'bench']);
  waitFor(() => peerOf().connection !== 'Connecting');
  const duringMBps = fioSeq(mnt, '5');
  waitFor(() => {
    const p = peerOf();
    return p.connection === 'Connected' && p.outOfSyncBytes === 0 && !p.resync;
  });
  const under = peerOf().lastResync!;
  return {
    ...f,
    rssMB: Number(hwm?.[1] ?? 0) / 1024,
    resync: {
      dirtyBytes: before.outOfSyncBytes,
      resyncedBytes: after.lastResync!.bytes,
      wireBytes: after.bytesSent - before.bytesSent,
      ms: after.lastResync!.ms,
      underLoad: { appMBps: duringMBps, resyncBytes: under.bytes, resyncMs: under.ms },
    },
  };
}

function waitFor(cond: () => boolean, ms = 120_000): void {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    spawnSync('sleep', ['0.2']);
  }
}

function ours(): Figures & { rssMB: number } {
  const cvs = join(root, 'bin', 'cvserver');
  const mnt = join(work, 'vol');
  mkdirSync(mnt);
  sh(cvs, ['volume', 'create', 'bench', '--size', values.size]);
  cleanups.push(() => spawnSync(cvs, ['volume', 'down', 'bench'], { env }));
  sh(cvs, ['volume', 'up', 'bench', '--mkfs', 'ext4', '--mount', mnt]);
  const status = () => JSON.parse(sh(cvs, ['volume', 'status', 'bench', '--json']));
  const pid = status().pid as number;
  const f = fio(mnt, () => status().daemon.counters);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { ...f, rssMB: Number(hwm?.[1] ?? 0) / 1024 };
}

try {
  process.stderr.write(`bench/volume: fio for ${seconds}s per job, ${values.size} volumes\n`);
  const none: Figures = { seqMBps: 0, randIops: 0 };
  const a = only.has('a') ? baseline() : none;
  const b = only.has('b') ? ours() : { ...none, rssMB: 0 };
  const c = only.has('c') ? replicated(2) : undefined;
  const cRam = only.has('c-ram') ? replicated(2, true) : undefined;
  const d = only.has('d') ? replicated(3) : undefined;
  const r = (x: number, y: number) => (y > 0 && x > 0 ? (x / y).toFixed(2) : 'n/a');
  const row = (label: string, f: Figures) =>
    console.log(
      `${label.padEnd(36)} ${f.seqMBps.toFixed(0).padStart(8)} MB/s        ${f.randIops.toFixed(0).padStart(8)} IOPS`,
    );
  const ratio = (label: string, x: Figures, y: Figures, targets = ['', '']) =>
    console.log(
      `${label.padEnd(36)} ${r(x.seqMBps, y.seqMBps).padStart(8)} ${targets[0]!.padEnd(16)} ${r(x.randIops, y.randIops).padStart(5)} ${targets[1]}`,
    );
  console.log(`${''.padEnd(36)} seq write 1M+fsync   randwrite 4k+fsync`);
  row('(a) plain loop, dio', a);
  row('(b) cvserver FUSE volume', b);
  if (c) row('(c) replicated, 2 replicas', c);
  if (cRam) row("(c') 2 replicas, peer disk in RAM", cRam);
  if (d) row('(d) replicated, 3 replicas', d);
  ratio('ratio b/a', b, a, ['(target >= 0.5)', '(target >= 0.5)']);
  if (c) ratio('ratio c/b', c, b, ['(target >= 0.85)', '(target >= 0.75)']);
  if (c) ratio('ratio c/a', c, a);
  if (cRam) ratio("ratio c'/b", cRam, b, ['(target >= 0.85)', '(target >= 0.75)']);
  if (d) ratio('ratio d/b', d, b);
  if (d) ratio('ratio d/a', d, a);
  const mixes = [
    ['(b)', b],
    ['(c)', c],
    ["(c')", cRam],
    ['(d)', d],
  ] as const;
  const mixOf = (k: 'seq' | 'rand') =>
    mixes
      .filter(([, x]) => x?.mix)
      .map(([l, x]) => `${l} ${x!.mix![k].toFixed(2)}`)
      .join(', ');
  if (b.mix)
    console.log(
      `FUSE WRITEs per FSYNC (1 = WRITE+FSYNC only, 1.5 = every fsync commits ext4's journal): ` +
        `seq ${mixOf('seq')}; rand ${mixOf('rand')}`,
    );
  if (c || d) {
    // What one replicated request cannot beat on this machine, measured in the same run.
    const floor = execFileSync(process.execPath, [join(import.meta.dirname, 'loopback.ts')], {
      encoding: 'utf8',
    });
    console.log(`round trips between two Node processes over loopback (bench/loopback.ts):`);
    for (const line of floor.trim().split('\n')) console.log(`  ${line}`);
  }
  console.log(
    `volume daemon peak RSS: (b) ${b.rssMB.toFixed(0)} MB, (c) ${c?.rssMB.toFixed(0) ?? '-'} MB, (d) ${d?.rssMB.toFixed(0) ?? '-'} MB (target <= 150 MB)`,
  );
  for (const [label, x] of [
    ['(c)', c],
    ["(c')", cRam],
    ['(d)', d],
  ] as const) {
    if (!x) continue;
    const z = x.resync;
    console.log(
      `resync ${label}: ${z.dirtyBytes} bytes dirty, ${z.resyncedBytes} resynced, ${z.wireBytes} on the wire ` +
        `(${(z.wireBytes / z.dirtyBytes).toFixed(3)}x dirty, target <= 1.1; includes ext4's own background writes), ` +
        `${(z.resyncedBytes / 1e6 / Math.max(z.ms / 1000, 0.001)).toFixed(0)} MB/s`,
    );
    const u = z.underLoad;
    console.log(
      `resync ${label} under load: application seq writes ${u.appMBps.toFixed(0)} MB/s during a ` +
        `${(u.resyncBytes / 1048576).toFixed(0)} MiB resync (${(u.appMBps / x.seqMBps).toFixed(2)} of the idle ` +
        `${x.seqMBps.toFixed(0)} MB/s); the resync took ${(u.resyncMs / 1000).toFixed(1)} s`,
    );
  }
} finally {
  for (const c of cleanups.reverse()) c();
  rmSync(work, { recursive: true, force: true });
}
