/**
 * bench/backup: the figures of issue 12 on one volume (a local FUSE volume, ext4, 2 GiB) holding
 * 1 GiB of mixed files (4 x 128 MiB, 384 x 1 MiB, 32768 x 4 KiB, incompressible), each with its
 * baseline measured in the same run:
 *   - backup throughput (MB/s) through a snapshot (the path `cvserver backup run` takes), against
 *     restic backing up the same files from a plain directory on the host's disk;
 *   - the second (unchanged) backup's time as a ratio of the first (target <= 0.1);
 *   - the application's fsync'd write rate during a backup as a ratio of idle (target >= 0.8), for
 *     4 KiB random writes over 256 MiB (every write a new chunk for the snapshot: the worst case)
 *     and 4 KiB sequential ones (a log), also with a snapshot held and no backup reading (what
 *     copy-on-write alone costs);
 *   - the freeze time of taking a snapshot, p50/p99 over N snapshots, idle and under that writer
 *     (target p99 <= 50 ms), with the old way's steps timed (fsfreeze -f, the daemon's mark,
 *     fsfreeze -u) and a process start;
 *   - the copy-on-write cost: fsync'd writes while a fresh snapshot exists, as a ratio of no
 *     snapshot (target >= 0.7), with the write latencies and the host disk's durable write latency
 *     (a first write to a chunk adds a 64 KiB read and two durable writes, one after the other).
 * Page caches are dropped before each backup (the snapshot's reads are direct I/O through FUSE).
 *   scripts/node bench/backup.ts [--snapshots 30] [--seconds 8] [--only throughput,writes,freeze,cow]
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    snapshots: { type: 'string', default: '30' },
    seconds: { type: 'string', default: '8' },
    only: { type: 'string', default: 'throughput,writes,freeze,cow' },
  },
});
const only = new Set(values.only.split(','));
const N = Number(values.snapshots);
const SECS = Number(values.seconds);
const root = join(import.meta.dirname, '..');
const cvs = join(root, 'bin', 'cvserver');
const work = mkdtempSync(join(tmpdir(), 'cvs-bench-backup-'));
process.env.CVSERVER_STATE_DIR = join(work, 'state');
const env = { ...process.env };
const cleanups: Array<() => void> = [];
const VOL = 'bkbench';

// After the state dir is set: the libraries read it on each call.
const { createSnapshot, deleteSnapshot, mountSnapshot, unmountSnapshot } = await import(
  '../src/volume/snapshot/commands.ts'
);
const { callControl } = await import('../src/volume/control.ts');
const { volumeLayout } = await import('../src/volume/layout.ts');
const { BACKGROUND_PRIORITY, runRestic } = await import('../src/backup/restic.ts');
const { run } = await import('../src/lib/exec.ts');

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env, maxBuffer: 64 << 20 });
}
const dropCaches = () => writeFileSync('/proc/sys/vm/drop_caches', '3');
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? 0;
};
const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;

/** 1 GiB of mixed files under `dir`. */
function fill(dir: string): number {
  let bytes = 0;
  const put = (path: string, n: number) => {
    writeFileSync(path, randomBytes(n));
    bytes += n;
  };
  mkdirSync(join(dir, 'large'), { recursive: true });
  for (let i = 0; i < 4; i++) put(join(dir, 'large', `f${i}`), 128 << 20);
  for (let d = 0; d < 8; d++) {
    mkdirSync(join(dir, 'medium', `d${d}`), { recursive: true });
    for (let i = 0; i < 48; i++) put(join(dir, 'medium', `d${d}`, `f${i}`), 1 << 20);
  }
  for (let d = 0; d < 64; d++) {
    mkdirSync(join(dir, 'small', `d${d}`), { recursive: true });
    for (let i = 0; i < 512; i++) put(join(dir, 'small', `d${d}`, `f${i}`), 4096);
  }
  sh('sync', []);
  return bytes;
}

function newRepo(name: string) {
  const repo = { repository: join(work, name), passwordFile: join(work, 'pw') };
  writeFileSync(repo.passwordFile, 'bench\n', { mode: 0o600 });
  sh('restic', ['-r', repo.repository, '--password-file', repo.passwordFile, 'init']);
  return repo;
}

type Repo = ReturnType<typeof newRepo>;

/** restic backup of `dir` (fixed host, as cvserver does); seconds. */
async function resticBackup(repo: Repo, dir: string): Promise<number> {
  const t0 = performance.now();
  const r = await runRestic(repo, ['backup', '--json', '--host', 'cvserver', dir]);
  if (r.code !== 0) throw new Error(`restic backup: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}

/** What `backup run` does around restic: snapshot, mount read-only, back up, release; seconds and frozen ms. */
async function snapshotBackup(
  repo: Repo,
  mnt: string,
  prefix: readonly string[] = [],
): Promise<{ s: number; frozenMs: number }> {
  const t0 = performance.now();
  const name = `b${Date.now()}`;
  const snap = await createSnapshot(VOL, name);
  try {
    await mountSnapshot(VOL, name, mnt);
    const r = await runRestic(repo, ['backup', '--json', '--host', 'cvserver', mnt], undefined, {}, prefix);
    if (r.code !== 0) throw new Error(`restic backup: ${r.stderr}`);
  } finally {
    await unmountSnapshot(VOL, name).catch((err: unknown) =>
      process.stderr.write(`bench/backup: releasing ${name}: ${(err as Error).message}\n`),
    );
    await deleteSnapshot(VOL, name);
  }
  return { s: (performance.now() - t0) / 1000, frozenMs: snap.frozenMs };
}

/**
 * The application's writes, each followed by an fsync, on files written beforehand (fio would
 * otherwise measure ext4's first touch): 4 KiB random over 256 MiB (every write a new 64 KiB chunk
 * for a snapshot, the worst case), 4 KiB sequential (a log: one write in 16 a new chunk), 1 MiB sequential.
 */
type Workload = 'rand4k' | 'log4k' | 'seq1m';
const WORKLOADS: Record<Workload, { file: string; rw: string; bs: string }> = {
  rand4k: { file: 'app', rw: 'randwrite', bs: '4k' },
  log4k: { file: 'log', rw: 'write', bs: '4k' },
  seq1m: { file: 'seq', rw: 'write', bs: '1M' },
};
function fioArgs(dir: string, secs: number, w: Workload): string[] {
  const x = WORKLOADS[w];
  return [
    '--ioengine=psync',
    `--directory=${dir}`,
    '--output-format=json',
    `--name=${x.file}`,
    `--rw=${x.rw}`,
    `--bs=${x.bs}`,
    '--size=256M',
    '--fsync=1',
    '--time_based',
    `--runtime=${secs}`,
  ];
}
function fioResult(out: string): { iops: number; mbps: number; clatUs: number } {
  const j = JSON.parse(out.slice(out.indexOf('{'))).jobs[0].write;
  return { iops: j.iops, mbps: j.bw_bytes / 1e6, clatUs: (j.clat_ns?.mean ?? 0) / 1000 };
}
function fioNow(dir: string, secs: number, w: Workload) {
  return fioResult(sh('fio', fioArgs(dir, secs, w)));
}
function fioAsync(
  dir: string,
  secs: number,
  w: Workload,
): { done: Promise<{ iops: number }>; child: ChildProcess } {
  const child = spawn('fio', fioArgs(dir, secs, w), { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const done = new Promise<{ iops: number }>((resolve, reject) =>
    child.on('close', (code) =>
      code === 0 ? resolve(fioResult(out)) : reject(new Error(`fio exit ${code}`)),
    ),
  );
  return { done, child };
}
/** The files fio writes, written once beforehand (fio would otherwise measure ext4's first touch). */
function prewrite(dir: string): void {
  sh('dd', [
    'if=/dev/urandom',
    `of=${join(dir, 'app.0.0')}`,
    'bs=1M',
    'count=256',
    'conv=fsync',
    'status=none',
  ]);
  sh('dd', [
    'if=/dev/urandom',
    `of=${join(dir, 'seq.0.0')}`,
    'bs=1M',
    'count=256',
    'conv=fsync',
    'status=none',
  ]);
}

/** One snapshot taken step by step, timed: the same steps as createSnapshot. */
async function freezeSteps(mnt: string, name: string) {
  const l = volumeLayout(VOL);
  await run('sync', ['-f', mnt]);
  const t0 = performance.now();
  await run('fsfreeze', ['-f', mnt]);
  const t1 = performance.now();
  await callControl(l.controlSocket, { op: 'snapshot-create', name }, 30_000);
  const t2 = performance.now();
  await run('fsfreeze', ['-u', mnt]);
  const t3 = performance.now();
  await deleteSnapshot(VOL, name);
  return { freeze: t1 - t0, mark: t2 - t1, thaw: t3 - t2, total: t3 - t0 };
}

async function freezeFigures(mnt: string, label: string) {
  // The window as the helper times it, and inside it the FIFREEZE calls and the daemon's mark.
  const frozen: number[] = [];
  const ioctl: number[] = [];
  const mark: number[] = [];
  for (let i = 0; i < N; i++) {
    const s = await createSnapshot(VOL, `f${i}`);
    frozen.push(s.frozenMs);
    if (s.freezeMs !== undefined) ioctl.push(s.freezeMs);
    mark.push(s.tookMs);
    await deleteSnapshot(VOL, `f${i}`);
  }
  const steps: { freeze: number; mark: number; thaw: number; total: number }[] = [];
  for (let i = 0; i < Math.min(N, 10); i++) steps.push(await freezeSteps(mnt, `s${i}`));
  const med = (k: keyof (typeof steps)[number]) =>
    r1(
      pct(
        steps.map((x) => x[k]),
        50,
      ),
    );
  // A process start alone (what fsfreeze -f/-u each cost besides the ioctl).
  const starts: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t = performance.now();
    await run('true', []);
    starts.push(performance.now() - t);
  }
  return {
    label,
    p50: r1(pct(frozen, 50)),
    p99: r1(pct(frozen, 99)),
    max: r1(Math.max(...frozen)),
    inWindow: {
      freezeIoctlP50: r1(pct(ioctl, 50)),
      freezeIoctlP99: r1(pct(ioctl, 99)),
      daemonMarkP50: r1(pct(mark, 50)),
      daemonMarkP99: r1(pct(mark, 99)),
    },
    oldStepsMedian: {
      freeze: med('freeze'),
      mark: med('mark'),
      thaw: med('thaw'),
      processStart: r1(pct(starts, 50)),
    },
  };
}

const out: Record<string, unknown> = {};
try {
  const mnt = join(work, 'vol');
  const snapMnt = join(work, 'snap');
  const plain = join(work, 'plain');
  mkdirSync(mnt);
  mkdirSync(snapMnt);
  sh(cvs, ['volume', 'create', VOL, '--size', '2G']);
  cleanups.push(() => spawnSync(cvs, ['volume', 'down', VOL], { env }));
  sh(cvs, ['volume', 'up', VOL, '--mkfs', 'ext4', '--mount', mnt]);
  process.stderr.write(`bench/backup: filling ${VOL} with 1 GiB of mixed files\n`);
  const bytes = fill(join(mnt, 'data'));
  prewrite(mnt);

  if (only.has('throughput')) {
    // Baseline: restic on the same files in a plain directory of the host's disk.
    sh('cp', ['-a', join(mnt, 'data'), plain]);
    dropCaches();
    const base = await resticBackup(newRepo('repo-base'), plain);
    rmSync(plain, { recursive: true, force: true });
    const repo = newRepo('repo-a');
    dropCaches();
    const first = await snapshotBackup(repo, snapMnt);
    dropCaches();
    const second = await snapshotBackup(repo, snapMnt);
    out.throughput = {
      bytes,
      baselineSeconds: r1(base),
      baselineMBps: r1(bytes / 1e6 / base),
      firstSeconds: r1(first.s),
      firstMBps: r1(bytes / 1e6 / first.s),
      ratioToBaseline: r2(base / first.s),
      secondSeconds: r1(second.s),
      secondToFirst: r2(second.s / first.s),
      target: 'secondToFirst <= 0.1',
    };
    process.stderr.write(`  ${JSON.stringify(out.throughput)}\n`);
  }

  if (only.has('writes')) {
    // Idle, with a snapshot held (copy-on-write alone), and during a backup (copy-on-write and
    // restic reading the snapshot through the same daemon): one backup, the two workloads in turn;
    // restic at normal priority, and as `backup run` starts it (BACKGROUND_PRIORITY). The floor:
    // the same writes while restic backs up a copy of the files on the host's disk (no snapshot,
    // no reads through the daemon), what sharing one disk with a backup costs by itself.
    const kinds: Workload[] = ['rand4k', 'log4k'];
    const idle = kinds.map((w) => fioNow(mnt, SECS, w).iops);
    await createSnapshot(VOL, 'held');
    const held = kinds.map((w) => fioNow(mnt, SECS, w).iops);
    await deleteSnapshot(VOL, 'held');
    const during = async (backup: () => Promise<{ s: number }>) => {
      dropCaches();
      const b = backup();
      const iops: number[] = [];
      for (const w of kinds) iops.push((await fioAsync(mnt, SECS, w).done).iops);
      return { iops, s: (await b).s };
    };
    const normal = await during(() => snapshotBackup(newRepo('repo-n'), snapMnt));
    const bg = await during(() => snapshotBackup(newRepo('repo-w'), snapMnt, BACKGROUND_PRIORITY));
    sh('cp', ['-a', join(mnt, 'data'), plain]);
    const floor = await during(async () => ({ s: await resticBackup(newRepo('repo-f'), plain) }));
    rmSync(plain, { recursive: true, force: true });
    // Idle again after the backups: the baseline is the mean of before and after (the load drifts).
    for (const [i, w] of kinds.entries()) idle[i] = (idle[i]! + fioNow(mnt, SECS, w).iops) / 2;
    out.writesDuringBackup = {
      ...Object.fromEntries(
        kinds.map((w, i) => [
          w,
          {
            idleIops: r1(idle[i]!),
            snapshotHeldIops: r1(held[i]!),
            duringBackupIops: r1(bg.iops[i]!),
            ratio: r2(bg.iops[i]! / idle[i]!),
            heldRatio: r2(held[i]! / idle[i]!),
            normalPriorityResticRatio: r2(normal.iops[i]! / idle[i]!),
            hostBackupFloorRatio: r2(floor.iops[i]! / idle[i]!),
          },
        ]),
      ),
      backupSeconds: r1(bg.s),
      normalPriorityBackupSeconds: r1(normal.s),
      hostBackupSeconds: r1(floor.s),
      overlapped: Math.min(bg.s, normal.s, floor.s) >= SECS * kinds.length,
      target: 'ratio >= 0.8',
    };
    process.stderr.write(`  ${JSON.stringify(out.writesDuringBackup)}\n`);
  }

  if (only.has('freeze')) {
    const idle = await freezeFigures(mnt, 'idle');
    const f = fioAsync(mnt, 1000, 'rand4k');
    let busy: Awaited<ReturnType<typeof freezeFigures>>;
    try {
      busy = await freezeFigures(mnt, 'under fsync writes');
    } finally {
      f.child.kill('SIGINT');
      await f.done.catch(() => undefined);
    }
    out.freeze = { snapshots: N, idle, busy, target: 'p99 <= 50 ms' };
    process.stderr.write(`  ${JSON.stringify(out.freeze)}\n`);
  }

  if (only.has('cow')) {
    // Rounds of (no snapshot, a fresh snapshot: every chunk new to it) per workload, interleaved:
    // this shared machine's load drifts by 2x within a minute. The ratio is over the sums; the
    // rounds' own ratios show the spread.
    const ROUNDS = 3;
    const secs = Math.max(3, Math.round(SECS / 2));
    const kinds: Workload[] = ['rand4k', 'log4k', 'seq1m'];
    const none: ReturnType<typeof fioNow>[][] = kinds.map(() => []);
    const held: ReturnType<typeof fioNow>[][] = kinds.map(() => []);
    for (const [i, w] of kinds.entries())
      for (let r = 0; r < ROUNDS; r++) {
        none[i]!.push(fioNow(mnt, secs, w));
        await createSnapshot(VOL, 'cow');
        try {
          held[i]!.push(fioNow(mnt, secs, w));
        } finally {
          await deleteSnapshot(VOL, 'cow');
        }
      }
    // Where a first write's time goes: the daemon reads the chunk, then writes it (64 KiB) and its
    // map record durably (O_DSYNC), one after the other, on the state dir's disk.
    const dsync = (bs: string) => {
      const r = JSON.parse(
        sh('fio', [
          '--ioengine=psync',
          `--directory=${work}`,
          '--output-format=json',
          '--name=dsync',
          '--rw=write',
          `--bs=${bs}`,
          '--size=64M',
          '--sync=1',
          '--time_based',
          '--runtime=3',
        ]),
      ).jobs[0].write;
      return r1(r.clat_ns.mean / 1000);
    };
    const rate = (w: Workload, x: ReturnType<typeof fioNow>) => (w === 'seq1m' ? x.mbps : x.iops);
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const mean = (xs: number[]) => sum(xs) / xs.length;
    out.cow = {
      ...Object.fromEntries(
        kinds.map((w, i) => {
          const n = none[i]!.map((x) => rate(w, x));
          const h = held[i]!.map((x) => rate(w, x));
          return [
            w,
            {
              none: r1(mean(n)),
              snapshot: r1(mean(h)),
              unit: w === 'seq1m' ? 'MB/s' : 'IOPS',
              ratio: r2(sum(h) / sum(n)),
              roundRatios: h.map((x, j) => r2(x / n[j]!)),
              writeLatencyUs: {
                none: r1(mean(none[i]!.map((x) => x.clatUs))),
                snapshot: r1(mean(held[i]!.map((x) => x.clatUs))),
              },
            },
          ];
        }),
      ),
      hostDurableWriteUs: { '64k': dsync('64k'), '4k': dsync('4k') },
      target: 'ratio >= 0.7',
    };
    process.stderr.write(`  ${JSON.stringify(out.cow)}\n`);
  }
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
} finally {
  for (const c of cleanups.reverse()) c();
  spawnSync('umount', [join(work, 'snap')]);
  rmSync(work, { recursive: true, force: true });
}
