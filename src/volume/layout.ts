import { join } from 'node:path';
import { volumeDir } from '../lib/paths.ts';
import { DATA_FILE, METADATA_FILE } from './metadata.ts';
import type { ReplicaServerStatus } from './replication/replica-server.ts';
import type { ReplicationStatus } from './replication/replicated-device.ts';

/** Where a volume's files live: its data and metadata, and the run-time state of its daemon. */
export interface VolumeLayout {
  name: string;
  dir: string;
  dataFile: string;
  metaFile: string;
  runDir: string;
  pidFile: string;
  statusFile: string;
  /** What `up` set up (loop device, mount point), so `down` and `status` can find it. */
  upFile: string;
  lockFile: string;
  logFile: string;
  fuseDir: string;
  /** The file the FUSE server exposes; the loop device is attached to it. */
  deviceFile: string;
  /** The daemon's control socket (promote, demote, verify, ... of a replicated volume). */
  controlSocket: string;
  /** Bitmaps, activity log and saved split-brain blocks of a replicated volume. */
  replicationDir: string;
  /** One directory per snapshot (src/volume/snapshot/format.ts). */
  snapshotsDir: string;
}

/** Where a snapshot's read-only FUSE file is served while it is exposed (`volume snapshot mount`). */
export function snapshotFuseDir(l: VolumeLayout, snapshot: string): string {
  return join(l.snapshotsDir, snapshot, 'fuse');
}

export const DEVICE_FILE_NAME = 'device';

export function volumeLayout(name: string, dir = volumeDir(name)): VolumeLayout {
  const runDir = join(dir, 'run');
  const fuseDir = join(dir, 'fuse');
  return {
    name,
    dir,
    dataFile: join(dir, DATA_FILE),
    metaFile: join(dir, METADATA_FILE),
    runDir,
    pidFile: join(runDir, 'daemon.pid'),
    statusFile: join(runDir, 'status.json'),
    upFile: join(runDir, 'up.json'),
    lockFile: join(runDir, 'lock'),
    logFile: join(runDir, 'daemon.log'),
    fuseDir,
    deviceFile: join(fuseDir, DEVICE_FILE_NAME),
    controlSocket: join(runDir, 'control.sock'),
    replicationDir: join(dir, 'replication'),
    snapshotsDir: join(dir, 'snapshots'),
  };
}

/** What the daemon reports about itself in `run/status.json`. */
export interface DaemonStatus {
  pid: number;
  state: 'starting' | 'serving' | 'stopping' | 'stopped';
  startedAt: string;
  updatedAt: string;
  /** The previous daemon did not shut down cleanly (crash or kill). */
  recoveredFromCrash: boolean;
  counters: {
    reads: number;
    writes: number;
    fsyncs: number;
    bytesRead: number;
    bytesWritten: number;
    errors: number;
  };
  /** Replicated volumes only: this replica's role. */
  role?: 'Primary' | 'Secondary';
  /** Replicated volumes only: roles, disk and connection states, quorum, resync progress. */
  replication?: DaemonReplicationStatus;
}

export type DaemonReplicationStatus = (
  | ReplicationStatus
  | { role: 'Secondary'; diskState: 'Diskless'; peers?: undefined; quorum?: undefined }
) & {
  node: string;
  listen: string;
  /** The FUSE device is mounted (only on the primary). */
  fuseServing: boolean;
  /** A `volume verify` in progress. */
  verifying?: { peer: string; doneBytes: number; totalBytes: number; startedAt: string };
  server: ReplicaServerStatus;
};
