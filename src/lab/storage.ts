/**
 * What a dead node leaves in the host's kernel: mounts under its state dir (ext4 at mnt/*, FUSE
 * under volumes/* /fuse) and loop devices whose backing file is under it. Cleared lazily, as a
 * reboot would: filesystems first, then loop devices, then FUSE mounts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';

interface Mount {
  point: string;
  type: string;
}

/** /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

export function parseMountinfo(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    const point = left?.split(' ')[4];
    const type = right?.split(' ')[0];
    if (point && type) out.push({ point: unescapeOctal(point), type });
  }
  return out;
}

const under = (path: string, dir: string): boolean => path === dir || path.startsWith(`${dir}/`);

export function mountsUnder(dir: string, mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): Mount[] {
  return parseMountinfo(mountinfo)
    .filter((m) => under(m.point, dir))
    .sort((a, b) => b.point.length - a.point.length);
}

/** Loop devices (/dev/loopN) whose backing file is under `dir`. */
export function loopDevicesUnder(dir: string): string[] {
  if (!existsSync('/sys/block')) return [];
  const out: string[] = [];
  for (const dev of readdirSync('/sys/block').filter((d) => d.startsWith('loop'))) {
    try {
      const backing = readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8')
        .trim()
        .replace(/ \(deleted\)$/, '');
      if (under(backing, dir)) out.push(`/dev/${dev}`);
    } catch {}
  }
  return out;
}

export interface StorageCleanup {
  unmounted: string[];
  detached: string[];
}

/** Lazily unmounts everything under `dir` and detaches its loop devices; returns what it did. */
export function cleanupStorage(dir: string): StorageCleanup {
  const done: StorageCleanup = { unmounted: [], detached: [] };
  const umount = (m: Mount) => {
    if (spawnSync('umount', ['-l', m.point], { stdio: 'ignore' }).status === 0) done.unmounted.push(m.point);
  };
  // A few passes: mounts may be stacked on one another.
  for (let pass = 0; pass < 3; pass++) {
    const mounts = mountsUnder(dir);
    for (const m of mounts.filter((x) => !x.type.startsWith('fuse'))) umount(m);
    for (const dev of loopDevicesUnder(dir)) {
      // On a device still in use (a lazily unmounted fs) the kernel detaches when it is last closed.
      if (spawnSync('losetup', ['-d', dev], { stdio: 'ignore' }).status === 0 && !done.detached.includes(dev))
        done.detached.push(dev);
    }
    for (const m of mountsUnder(dir).filter((x) => x.type.startsWith('fuse'))) umount(m);
    if (mountsUnder(dir).length === 0) break;
  }
  return done;
}
