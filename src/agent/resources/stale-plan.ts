/**
 * What a node's state dir needs after a crash or a power cut, before its agent starts (pure): the
 * kernel may still hold mounts, loop devices and containers whose volume daemon is gone. Only what
 * belongs to this state dir is touched, and nothing that hangs on a live daemon (a restarted agent
 * adopts what still runs).
 */
import { join, sep } from 'node:path';

export interface StaleFacts {
  stateDir: string;
  mounts: Array<{ source: string; dir: string; fstype: string }>;
  loops: Array<{ name: string; backFile: string }>;
  /** Volumes of this state dir, with whether their daemon lives. */
  volumes: Array<{ name: string; daemonAlive: boolean }>;
  /** Containers in this state dir's crun root, with the volume they run on (= their name). */
  containers: Array<{ name: string; status: string }>;
}

export type StaleAction =
  | { kind: 'kill-container'; name: string; reason: string }
  | { kind: 'delete-container'; name: string; reason: string }
  | { kind: 'unmount'; dir: string; reason: string }
  | { kind: 'detach-loop'; loop: string; reason: string }
  | { kind: 'unmount-fuse'; dir: string; reason: string };

const under = (path: string, dir: string) => path.startsWith(dir.endsWith(sep) ? dir : dir + sep);

export function planStaleCleanup(f: StaleFacts): StaleAction[] {
  const volumesDir = join(f.stateDir, 'volumes');
  const mntDir = join(f.stateDir, 'mnt');
  const alive = new Set(f.volumes.filter((v) => v.daemonAlive).map((v) => v.name));
  const known = new Set(f.volumes.map((v) => v.name));
  /** The volume a path under volumes/ belongs to. */
  const volumeOf = (path: string) =>
    under(path, volumesDir) ? path.slice(volumesDir.length + 1).split(sep)[0] : undefined;
  const deadVolume = (name: string | undefined) => name !== undefined && !alive.has(name);
  const actions: StaleAction[] = [];

  // Containers on a volume whose daemon died run on a filesystem that only returns EIO.
  for (const c of f.containers) {
    const dead = known.has(c.name) && deadVolume(c.name);
    if (c.status === 'stopped') actions.push({ kind: 'delete-container', name: c.name, reason: 'exited' });
    else if (dead)
      actions.push({ kind: 'kill-container', name: c.name, reason: 'its volume daemon is gone' });
  }

  const backFile = (p: string) => p.replace(/ \(deleted\)$/, '');
  const staleLoops = f.loops.filter((l) => {
    const file = backFile(l.backFile);
    return under(file, f.stateDir) && (deadVolume(volumeOf(file)) || l.backFile.endsWith(' (deleted)'));
  });
  const staleLoopNames = new Set(staleLoops.map((l) => l.name));
  const liveLoopNames = new Set(f.loops.filter((l) => !staleLoopNames.has(l.name)).map((l) => l.name));

  // Filesystems first (deepest first), then their loop devices, then the FUSE mounts below them.
  const fsMounts = f.mounts.filter(
    (m) =>
      staleLoopNames.has(m.source) ||
      (under(m.dir, mntDir) && m.source.startsWith('/dev/loop') && !liveLoopNames.has(m.source)),
  );
  for (const m of [...fsMounts].sort((a, b) => b.dir.length - a.dir.length))
    actions.push({ kind: 'unmount', dir: m.dir, reason: `${m.source} hangs on a dead volume daemon` });
  for (const l of staleLoops)
    actions.push({
      kind: 'detach-loop',
      loop: l.name,
      reason: `backed by ${l.backFile}, its daemon is gone`,
    });
  for (const m of f.mounts) {
    if (!m.fstype.startsWith('fuse') || !under(m.dir, volumesDir)) continue;
    const v = volumeOf(m.dir);
    if (deadVolume(v) && m.dir === join(volumesDir, v!, 'fuse'))
      actions.push({ kind: 'unmount-fuse', dir: m.dir, reason: `volume ${v}: its daemon is gone` });
  }
  return actions;
}
