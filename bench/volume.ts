/**
 * bench/volume: fio on ext4 over (a) a loop device on a plain file with direct I/O, the baseline,
 * and (b) our FUSE volume (loop with direct I/O on the FUSE device file), in one run.
 * Prints MB/s for 1 MiB sequential writes with fsync, IOPS for 4 KiB random writes with an fsync
 * per write, the ratios b/a, and the volume daemon's peak RSS.
 *   scripts/node bench/volume.ts [--seconds 10] [--size 1G]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '10' }, size: { type: 'string', default: '1G' } },
});
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
}

function fio(dir: string): Figures {
  const common = ['--ioengine=psync', `--directory=${dir}`, '--output-format=json', '--group_reporting'];
  const seq = JSON.parse(
    sh('fio', [
      ...common,
      '--name=seq',
      '--rw=write',
      '--bs=1M',
      '--size=256M',
      '--fsync=1',
      `--runtime=${seconds}`,
    ]),
  );
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
  return { seqMBps: seq.jobs[0].write.bw_bytes / 1e6, randIops: rand.jobs[0].write.iops };
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

function ours(): Figures & { rssMB: number } {
  const cvs = join(root, 'bin', 'cvserver');
  const mnt = join(work, 'vol');
  mkdirSync(mnt);
  sh(cvs, ['volume', 'create', 'bench', '--size', values.size]);
  cleanups.push(() => spawnSync(cvs, ['volume', 'down', 'bench'], { env }));
  sh(cvs, ['volume', 'up', 'bench', '--mkfs', 'ext4', '--mount', mnt]);
  const pid = JSON.parse(sh(cvs, ['volume', 'status', 'bench', '--json'])).pid as number;
  const f = fio(mnt);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { ...f, rssMB: Number(hwm?.[1] ?? 0) / 1024 };
}

try {
  process.stderr.write(`bench/volume: fio for ${seconds}s per job, ${values.size} volumes\n`);
  const a = baseline();
  const b = ours();
  const r = (x: number, y: number) => (y > 0 ? (x / y).toFixed(2) : 'n/a');
  console.log('                         seq write 1M+fsync   randwrite 4k+fsync');
  console.log(
    `(a) plain loop, dio      ${a.seqMBps.toFixed(0).padStart(8)} MB/s        ${a.randIops.toFixed(0).padStart(8)} IOPS`,
  );
  console.log(
    `(b) cvserver FUSE volume ${b.seqMBps.toFixed(0).padStart(8)} MB/s        ${b.randIops.toFixed(0).padStart(8)} IOPS`,
  );
  console.log(
    `ratio b/a                ${r(b.seqMBps, a.seqMBps).padStart(8)} (target >= 0.5) ${r(b.randIops, a.randIops).padStart(5)} (target >= 0.5)`,
  );
  console.log(`volume daemon peak RSS   ${b.rssMB.toFixed(0)} MB (target <= 150 MB)`);
} finally {
  for (const c of cleanups.reverse()) c();
  rmSync(work, { recursive: true, force: true });
}
