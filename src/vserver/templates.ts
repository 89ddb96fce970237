import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { UserError } from '../lib/errors.ts';

function run(cmd: string, args: string[], what: string): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) {
    const tail = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').slice(-3).join(' / ');
    throw new UserError(`${what} failed: ${tail || r.error?.message || `exit ${r.status}`}`);
  }
}

/** A tiny root filesystem: Debian's static busybox with its applet links and a minimal /etc. */
export function createBusyboxRootfs(rootfs: string, busybox = '/bin/busybox'): void {
  if (!existsSync(busybox))
    throw new UserError(`template busybox: ${busybox} is missing (apt-get install busybox-static)`);
  for (const d of [
    'bin',
    'sbin',
    'usr/bin',
    'usr/sbin',
    'etc',
    'proc',
    'sys',
    'dev',
    'tmp',
    'root',
    'run',
    'var/log',
    'var/www',
  ]) {
    mkdirSync(join(rootfs, d), { recursive: true });
  }
  chmodSync(join(rootfs, 'tmp'), 0o1777);
  copyFileSync(busybox, join(rootfs, 'bin/busybox'));
  chmodSync(join(rootfs, 'bin/busybox'), 0o755);
  const list = spawnSync(busybox, ['--list-full'], { encoding: 'utf8' }).stdout ?? '';
  for (const applet of list.split('\n').filter(Boolean)) {
    const link = join(rootfs, applet);
    if (applet === 'bin/busybox' || existsSync(link)) continue;
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync('/bin/busybox', link);
  }
  writeFileSync(
    join(rootfs, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n',
  );
  writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeFileSync(join(rootfs, 'etc/hosts'), '127.0.0.1 localhost\n');
  writeFileSync(
    join(rootfs, 'etc/inittab'),
    '::sysinit:/bin/mount -a\n::respawn:-/bin/sh\n::ctrlaltdel:/bin/reboot\n::shutdown:/bin/true\n',
  );
}

/** Unpacks a root filesystem tarball (any compression tar recognises). */
export function importRootfsTarball(rootfs: string, tarball: string): void {
  if (!existsSync(tarball)) throw new UserError(`--import: ${tarball}: no such file`);
  mkdirSync(rootfs, { recursive: true });
  run('tar', ['-xpf', tarball, '-C', rootfs, '--numeric-owner'], `unpacking ${tarball}`);
}

/** The Debian mirror and suite apt on this machine uses (deb822 or one-line sources). */
export function aptMirror(): { mirror: string; suite: string } {
  const files = ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list'];
  if (existsSync('/etc/apt/sources.list.d')) {
    for (const f of readdirSync('/etc/apt/sources.list.d')) files.push(join('/etc/apt/sources.list.d', f));
  }
  for (const f of files) {
    if (!existsSync(f)) continue;
    const text = readFileSync(f, 'utf8');
    const deb822 = /^URIs:\s*(\S+)\s*$[\s\S]*?^Suites:\s*(\S+)/m.exec(text);
    if (deb822 && !/security/.test(deb822[1] ?? '')) return { mirror: deb822[1]!, suite: deb822[2]! };
    const line = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/m.exec(text);
    if (line && !/security/.test(line[1] ?? '')) return { mirror: line[1]!, suite: line[2]! };
  }
  return { mirror: 'http://deb.debian.org/debian', suite: 'bookworm' };
}

/**
 * A minimal Debian (debootstrap --variant=minbase) from the machine's apt mirror. The first run
 * keeps a tarball under `cacheDir`, so later creations only unpack it (seconds, not minutes).
 */
export function createDebianRootfs(rootfs: string, cacheDir: string): { cached: boolean } {
  const { mirror, suite } = aptMirror();
  const cache = join(cacheDir, `debian-${suite}-minbase.tar`);
  let cached = true;
  if (!existsSync(cache)) {
    cached = false;
    mkdirSync(cacheDir, { recursive: true });
    const work = join(cacheDir, `debootstrap-${process.pid}`);
    rmSync(work, { recursive: true, force: true });
    try {
      run('debootstrap', ['--variant=minbase', suite, work, mirror], `debootstrap ${suite} from ${mirror}`);
      run('tar', ['-cpf', `${cache}.tmp`, '-C', work, '--numeric-owner', '.'], 'packing the debian cache');
      renameSync(`${cache}.tmp`, cache);
    } finally {
      rmSync(work, { recursive: true, force: true });
      rmSync(`${cache}.tmp`, { force: true });
    }
  }
  importRootfsTarball(rootfs, cache);
  return { cached };
}
