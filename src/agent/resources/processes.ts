/** Processes of a state dir, found by their pid files and checked by their command line (pids get recycled). */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export function cmdlineOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return undefined;
  }
}

export function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The live daemon of the volume in `volumeDir` (its run/daemon.pid, checked by its command line). */
export function volumeDaemonPid(volumeDir: string): number | undefined {
  const pid = readPid(join(volumeDir, 'run', 'daemon.pid'));
  if (pid === undefined) return undefined;
  const cmd = cmdlineOf(pid);
  return cmd?.includes('daemon.ts') && cmd.includes(volumeDir) ? pid : undefined;
}

/** A vserver's supervisor, if `pid` still is one for that vserver. */
export function isSupervisor(pid: number | undefined, vserver: string): pid is number {
  if (!pid) return false;
  const cmd = cmdlineOf(pid);
  return cmd !== undefined && / supervise /.test(cmd) && cmd.trimEnd().endsWith(` ${vserver}`);
}

/** Every pid in the cgroup at `path` (as crun names it, e.g. /cvserver-1a2b3c4d/web), in any hierarchy. */
export function cgroupPids(path: string, root = '/sys/fs/cgroup'): number[] {
  const pids = new Set<number>();
  const files = [join(root, path, 'cgroup.procs')];
  for (const ctl of readdirSafe(root)) files.push(join(root, ctl, path, 'cgroup.procs'));
  for (const f of files) {
    try {
      for (const line of readFileSync(f, 'utf8').split('\n')) if (line) pids.add(Number(line));
    } catch {}
  }
  return [...pids].filter((p) => Number.isInteger(p) && p > 0);
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
