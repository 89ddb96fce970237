/**
 * Test helpers for volume snapshots: hash a device, read a snapshot's files with the format
 * module, and a last-resort cleanup of what snapshot commands set up (by path only).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  blockMapOfFile,
  COPIES_FILE,
  SNAPSHOT_INFO_FILE,
  snapshotInfoSchema,
} from '../../src/volume/snapshot/format.ts';

/** SHA-256 of a file or block device, read in 1 MiB pieces. */
export function sha256Of(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(1024 * 1024);
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** A snapshot's info and block map, decoded with the daemon's own format module. */
export function readSnapshotFiles(volumeDir: string, snapshot: string) {
  const dir = join(volumeDir, 'snapshots', snapshot);
  const info = snapshotInfoSchema.parse(JSON.parse(readFileSync(join(dir, SNAPSHOT_INFO_FILE), 'utf8')));
  const copies = join(dir, COPIES_FILE);
  const { map } = blockMapOfFile(readFileSync(copies), info.size, info.chunkSize);
  return { info, map, cowBytes: statSync(copies).blocks * 512 };
}

/** Unmounts and detaches whatever snapshot devices of this volume are left (lazy, by path). */
export function forceReleaseSnapshots(volumeDir: string): void {
  const root = join(volumeDir, 'snapshots');
  if (!existsSync(root)) return;
  for (const s of readdirSync(root)) {
    const fuse = join(root, s, 'fuse');
    const loops = spawnSync('losetup', ['-j', join(fuse, 'device')], { encoding: 'utf8' }).stdout;
    for (const line of loops.split('\n').filter(Boolean)) {
      const dev = line.split(':')[0]!;
      const mounts = readFileSync('/proc/mounts', 'utf8')
        .split('\n')
        .filter((l) => l.startsWith(`${dev} `));
      for (const m of mounts) spawnSync('umount', ['-l', m.split(' ')[1]!]);
      spawnSync('losetup', ['-d', dev]);
    }
    spawnSync('umount', ['-l', fuse]);
  }
}
