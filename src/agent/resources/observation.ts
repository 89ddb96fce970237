/** What `observe` reports, derived (pure) from the supervisor's record and the volume's status. */

import type { VolumeStatus } from '../../volume/lifecycle.ts';
import type { ContainerState } from '../../vserver/crun.ts';

export type ContainerStatus = ContainerState['status'];
export type HealthSummary = 'healthy' | 'unhealthy' | 'starting' | 'none';

export interface VolumeSummary {
  /** The volume daemon runs on this node. */
  up: boolean;
  role: 'primary' | 'secondary' | 'none';
  diskState: string;
  upToDate: boolean;
  epoch: number;
  /** Something (loop device, FUSE or ext4 mount) still hangs on a dead daemon: `down` then `up` repairs it. */
  failed: boolean;
  /** For /metrics (docs/metrics.md): bytes the peers still lack, summed over the peers this replica tracks. */
  outOfSyncBytes?: number;
  /** Resync speed to the peers now (bytes/s, summed), 0 when none runs. */
  resyncBytesPerSecond?: number;
  /** Writes held back for want of a quorum of replicas. */
  suspendedWrites?: number;
  /** A peer link parked in split-brain. */
  splitBrain?: boolean;
}

export interface ResourceObservation {
  container: ContainerStatus;
  health: HealthSummary;
  volume: VolumeSummary;
}

/**
 * One word for all health checks of a running container. The supervisor writes a check's state only
 * when it changes, so a check without an entry has not passed yet: starting.
 */
export function summarizeHealth(
  container: ContainerStatus,
  labels: readonly string[],
  record: Record<string, string> | undefined,
): HealthSummary {
  if (labels.length === 0 || container !== 'running') return 'none';
  const states = labels.map((l) => record?.[l]);
  if (states.includes('unhealthy')) return 'unhealthy';
  if (states.every((s) => s === 'healthy')) return 'healthy';
  return 'starting';
}

export const NO_VOLUME: VolumeSummary = {
  up: false,
  role: 'none',
  diskState: 'none',
  upToDate: false,
  epoch: 0,
  failed: false,
};

export function summarizeVolume(s: VolumeStatus | undefined): VolumeSummary {
  if (!s) return NO_VOLUME;
  const r = s.daemon?.replication;
  const up = s.pid !== null;
  const role = s.daemon?.role ?? r?.role;
  const diskState = r?.diskState ?? s.diskState;
  return {
    up,
    role: !up ? 'none' : role === 'Primary' ? 'primary' : 'secondary',
    diskState,
    upToDate: diskState === 'UpToDate',
    epoch: Math.max(s.epoch, r && 'epoch' in r ? r.epoch : 0),
    failed: s.health === 'failed',
    ...(r?.peers ? replicationNumbers(r) : {}),
  };
}

type Replication = NonNullable<NonNullable<VolumeStatus['daemon']>['replication']>;

/** What the metrics need from the daemon's replication status (a diskless tiebreaker has none). */
function replicationNumbers(r: Replication): Partial<VolumeSummary> {
  const peers = r.peers ?? [];
  return {
    outOfSyncBytes: peers.reduce((sum, p) => sum + p.outOfSyncBytes, 0),
    resyncBytesPerSecond: Math.round(peers.reduce((sum, p) => sum + (p.resync?.bytesPerSecond ?? 0), 0)),
    suspendedWrites: r.quorum?.suspendedWrites ?? 0,
    splitBrain: peers.some((p) => p.connection === 'SplitBrain'),
  };
}
