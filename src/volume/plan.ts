/**
 * Pure decisions for bringing a volume up or down, from what was observed on the node. `up` and
 * `down` are idempotent and repair half-done states: each step is planned only when needed.
 */
export interface VolumeObservation {
  daemonAlive: boolean;
  /** The FUSE mount of the device file exists (it may be stale if the daemon died). */
  fuseMounted: boolean;
  /** Loop devices whose backing file is our device file. */
  loops: string[];
  /** Mounts of those loop devices: [loop device, mount point]. */
  fsMounts: Array<{ loop: string; dir: string }>;
}

export type Step =
  | { kind: 'unmount-fs'; dir: string }
  | { kind: 'detach-loop'; loop: string }
  | { kind: 'unmount-fuse' }
  | { kind: 'start-daemon' }
  | { kind: 'wait-daemon-exit' }
  | { kind: 'attach-loop' }
  | { kind: 'mkfs'; fstype: string }
  | { kind: 'mount-fs'; dir: string };

export type Health = 'down' | 'up' | 'failed' | 'partial';

/** A volume is failed when something still hangs on a daemon that is gone. */
export function health(o: VolumeObservation): { health: Health; reason: string } {
  if (!o.daemonAlive && (o.fuseMounted || o.loops.length > 0)) {
    return {
      health: 'failed',
      reason: 'volume daemon is dead while its device is still in use; run `volume down` then `volume up`',
    };
  }
  if (!o.daemonAlive) return { health: 'down', reason: 'not running' };
  if (!o.fuseMounted) return { health: 'failed', reason: 'volume daemon runs but its FUSE mount is gone' };
  if (o.loops.length === 0) return { health: 'partial', reason: 'daemon serving, no loop device attached' };
  return {
    health: 'up',
    reason: o.fsMounts.length
      ? `mounted on ${o.fsMounts.map((m) => m.dir).join(', ')}`
      : 'block device attached',
  };
}

/** Tear down in order: filesystem → loop device → FUSE mount (the daemon exits when unmounted). */
export function planDown(o: VolumeObservation): Step[] {
  const steps: Step[] = o.fsMounts.map((m) => ({ kind: 'unmount-fs', dir: m.dir }));
  for (const loop of o.loops) steps.push({ kind: 'detach-loop', loop });
  if (o.fuseMounted) steps.push({ kind: 'unmount-fuse' });
  if (o.daemonAlive) steps.push({ kind: 'wait-daemon-exit' });
  return steps;
}

export interface UpOptions {
  /** Filesystem to make; the mkfs step itself skips a device that already carries one. */
  mkfs?: string;
  mountDir?: string;
}

/** Bring up: repair a failed state first (as `down` would), then daemon → loop → (mkfs) → mount. */
export function planUp(o: VolumeObservation, opts: UpOptions): Step[] {
  const h = health(o).health;
  const steps: Step[] = h === 'failed' ? planDown(o) : [];
  const fresh = h === 'failed';
  if (fresh || !o.daemonAlive) steps.push({ kind: 'start-daemon' });
  if (fresh || o.loops.length === 0) steps.push({ kind: 'attach-loop' });
  if (opts.mkfs) steps.push({ kind: 'mkfs', fstype: opts.mkfs });
  if (opts.mountDir && (fresh || !o.fsMounts.some((m) => m.dir === opts.mountDir))) {
    steps.push({ kind: 'mount-fs', dir: opts.mountDir });
  }
  return steps;
}
