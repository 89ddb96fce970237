/**
 * `cvserver volumes` and `GET /api/volumes` (one schema, one handler: api.ts's `volumes` op): every
 * vserver's volume with its replicas as the nodes report them (role, disk state, up to date, epoch,
 * out-of-sync bytes and resync rate where the reports carry them). Pure: from the status and the spec.
 */
import type { VserverSpec } from '../cluster/config.ts';
import { formatSize } from '../lib/size.ts';
import type { ClusterStatus } from './status.ts';

export type ReplicaView = ClusterStatus['vservers'][number]['replicas'][number];

export interface VolumeView {
  /** The vserver whose volume it is (a volume has its vserver's name). */
  vserver: string;
  /** The node the vserver is assigned to (its primary), or null. */
  node: string | null;
  /** Bytes, as in cluster.yaml. */
  size: number | null;
  filesystem: string | null;
  /** The replication port. */
  port: number | null;
  retired: boolean;
  replicas: ReplicaView[];
}

export interface VolumesAnswer {
  volumes: VolumeView[];
}

export function volumesOf(
  status: Pick<ClusterStatus, 'vservers'>,
  specs: Readonly<Record<string, Pick<VserverSpec, 'volume'>>>,
): VolumesAnswer {
  return {
    volumes: status.vservers.map((v) => {
      const vol = specs[v.name]?.volume;
      return {
        vserver: v.name,
        node: v.node,
        size: vol?.size ?? null,
        filesystem: vol?.filesystem ?? null,
        port: vol?.port ?? null,
        retired: v.retired,
        replicas: v.replicas,
      };
    }),
  };
}

/** A replica's sync as a few words: split-brain, resync progress, out-of-sync bytes, in sync. */
export function syncText(r: ReplicaView): string {
  if (r.splitBrain) return 'SPLIT-BRAIN';
  if (r.resyncBytesPerSecond)
    return `resync ${formatSize(r.resyncBytesPerSecond)}/s, ${formatSize(r.outOfSyncBytes ?? 0)} left`;
  if (r.outOfSyncBytes) return `${formatSize(r.outOfSyncBytes)} out of sync`;
  if (r.suspendedWrites) return `${r.suspendedWrites} writes suspended`;
  return r.upToDate ? 'in sync' : '-';
}

/** The human table of `cvserver volumes`: one row per replica. */
export function formatVolumes(a: VolumesAnswer): string[][] {
  const rows: string[][] = [];
  for (const v of a.volumes)
    for (const r of v.replicas)
      rows.push([
        v.vserver,
        v.size === null ? '-' : formatSize(v.size),
        r.node,
        r.node === v.node ? `${r.role} (runs here)` : r.role,
        r.diskState || '-',
        r.upToDate ? 'yes' : 'no',
        String(r.epoch),
        syncText(r),
      ]);
  return rows;
}

export const VOLUME_COLUMNS = ['VOLUME', 'SIZE', 'NODE', 'ROLE', 'DISK', 'UP TO DATE', 'EPOCH', 'SYNC'];
