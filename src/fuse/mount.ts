import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { run } from '../lib/exec.ts';

/** The filesystem type shown in /proc/mounts for our FUSE mounts. */
export const FUSE_FSTYPE = 'fuse.cvserver';

/**
 * Opens /dev/fuse and mounts it on `dir`. Returns the descriptor the session serves; the first
 * request it reads is INIT. `mount -i` so no mount.fuse* helper is looked for: we pass the
 * descriptor ourselves (as fd 3 of the mount process).
 */
export async function mountFuse(dir: string, source: string): Promise<number> {
  const fd = openSync('/dev/fuse', 'r+');
  try {
    const opts = 'fd=3,rootmode=40000,user_id=0,group_id=0,allow_other';
    await new Promise<void>((resolve, reject) => {
      const child = spawn('mount', ['-i', '-t', FUSE_FSTYPE, '-o', opts, source, dir], {
        stdio: ['ignore', 'ignore', 'pipe', fd],
      });
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0
          ? resolve()
          : reject(new Error(`mount of ${dir} failed: ${stderr.trim() || `exit ${code}`}`)),
      );
    });
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** Unmounts a FUSE mount; `lazy` detaches it even when busy or when its server is dead. */
export async function unmountFuse(dir: string, lazy = false): Promise<void> {
  await run('umount', lazy ? ['-l', dir] : [dir]);
}
