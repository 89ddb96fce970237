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
  /**
   * A replicated volume (replication.yaml): its daemon outlives the FUSE mount, which exists only
   * while this replica is primary.
   */
  replicated?: boolean;
  /** The running daemon's role, as it last reported it (replicated volumes). */
  role?: 'Primary' | 'Secondary';
  /** Snapshots exposed as read-only devices (`volume snapshot mount`): released before the volume. */
  snapshotDevices?: SnapshotDevice[];
}

export interface SnapshotDevice {
  snapshot: string;
  /** Where its read-only FUSE file is served, and its device file. */
  fuseDir: string;
  deviceFile: string;
  fuseMounted: boolean;
  loops: string[];
  fsMounts: Array<{ loop: string; dir: string }>;
}

export type Step =
  | { kind: 'unmount-fs'; dir: string }
  /** `file`: the loop's backing file, when it is not the volume's device file (a snapshot's). */
  | { kind: 'detach-loop'; loop: string; file?: string }
  | { kind: 'unmount-snapshot-fuse'; dir: string }
  | { kind: 'unmount-fuse' }
  | { kind: 'start-daemon' }
  | { kind: 'wait-daemon-exit' }
  | { kind: 'attach-loop' }
  | { kind: 'mkfs'; fstype: string }
  | { kind: 'mount-fs'; dir: string }
  | { kind: 'promote'; epoch?: number; force?: boolean; absent?: string[] }
  | { kind: 'demote' }
  | { kind: 'stop-daemon' };

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
  if (o.replicated) return replicaHealth(o);
  if (!o.fuseMounted) return { health: 'failed', reason: 'volume daemon runs but its FUSE mount is gone' };
  if (o.loops.length === 0) return { health: 'partial', reason: 'daemon serving, no loop device attached' };
  return {
    health: 'up',
    reason: o.fsMounts.length
      ? `mounted on ${o.fsMounts.map((m) => m.dir).join(', ')}`
      : 'block device attached',
  };
}

function replicaHealth(o: VolumeObservation): { health: Health; reason: string } {
  if (o.role !== 'Primary') {
    if (o.loops.length > 0 || o.fsMounts.length > 0)
      return { health: 'partial', reason: 'secondary, but its device is still attached' };
    return { health: 'up', reason: "secondary (receives the primary's writes)" };
  }
  if (!o.fuseMounted) return { health: 'partial', reason: 'primary, FUSE device not (yet) mounted' };
  if (o.loops.length === 0) return { health: 'up', reason: 'primary, no loop device attached' };
  return {
    health: 'up',
    reason: `primary, ${o.fsMounts.length ? `mounted on ${o.fsMounts.map((m) => m.dir).join(', ')}` : 'block device attached'}`,
  };
}

/** Release a snapshot's read-only device: its filesystem, its loop device, its FUSE file. */
export function releaseSnapshot(d: SnapshotDevice): Step[] {
  const steps: Step[] = d.fsMounts.map((m) => ({ kind: 'unmount-fs', dir: m.dir }));
  for (const loop of d.loops) steps.push({ kind: 'detach-loop', loop, file: d.deviceFile });
  if (d.fuseMounted) steps.push({ kind: 'unmount-snapshot-fuse', dir: d.fuseDir });
  return steps;
}

/** Release the block devices above the daemon: snapshots' first, then filesystem, then loop device. */
function releaseDevice(o: VolumeObservation): Step[] {
  const steps: Step[] = (o.snapshotDevices ?? []).flatMap(releaseSnapshot);
  steps.push(...o.fsMounts.map((m): Step => ({ kind: 'unmount-fs', dir: m.dir })));
  for (const loop of o.loops) steps.push({ kind: 'detach-loop', loop });
  return steps;
}

/**
 * Tear down in order: filesystem → loop device → FUSE mount (a local volume's daemon exits when
 * unmounted; a replica's daemon is asked to stop, which demotes it first).
 */
export function planDown(o: VolumeObservation): Step[] {
  const steps = releaseDevice(o);
  if (o.replicated && o.daemonAlive) steps.push({ kind: 'stop-daemon' });
  else if (o.fuseMounted) steps.push({ kind: 'unmount-fuse' });
  if (o.daemonAlive) steps.push({ kind: 'wait-daemon-exit' });
  return steps;
}

/** Primary → secondary: release the device, then the daemon unmounts FUSE and demotes. */
export function planSecondary(o: VolumeObservation): Step[] {
  if (!o.daemonAlive) return [];
  return [...releaseDevice(o), { kind: 'demote' }];
}

export interface UpOptions {
  /** Filesystem to make; the mkfs step itself skips a device that already carries one. */
  mkfs?: string;
  mountDir?: string;
  /** Replicated volumes: become primary (with this epoch, or the next one when absent). */
  primary?: {
    epoch?: number;
    force?: boolean;
    /** Peers the caller knows to be down (the cluster saw their lease end): not waited for. */
    absent?: string[];
  };
}

/** Bring up: repair a failed state first (as `down` would), then daemon → loop → (mkfs) → mount. */
export function planUp(o: VolumeObservation, opts: UpOptions): Step[] {
  const h = health(o).health;
  const steps: Step[] = h === 'failed' ? planDown(o) : [];
  const fresh = h === 'failed';
  if (fresh || !o.daemonAlive) steps.push({ kind: 'start-daemon' });
  if (o.replicated) {
    // A secondary only receives: no block device above it.
    if (!opts.primary) return steps;
    if (fresh || !o.daemonAlive || o.role !== 'Primary' || !o.fuseMounted)
      steps.push({
        kind: 'promote',
        epoch: opts.primary.epoch,
        ...(opts.primary.force ? { force: true } : {}),
        ...(opts.primary.absent?.length ? { absent: opts.primary.absent } : {}),
      });
  }
  if (fresh || o.loops.length === 0) steps.push({ kind: 'attach-loop' });
  if (opts.mkfs) steps.push({ kind: 'mkfs', fstype: opts.mkfs });
  if (opts.mountDir && (fresh || !o.fsMounts.some((m) => m.dir === opts.mountDir))) {
    steps.push({ kind: 'mount-fs', dir: opts.mountDir });
  }
  return steps;
}
