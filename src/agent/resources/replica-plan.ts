/**
 * Which replica of a vserver's volume this node holds, and the replication config it gets: pure,
 * from the cluster spec. Every replica listens on its node's first address at the volume's port;
 * a 2-replica volume in a cluster with a witness gets the witness as its diskless tiebreaker.
 */
import type { ClusterSpec, VserverSpec } from '../../cluster/config.ts';
import type { ReplicationConfigFile } from '../../volume/replication-config.ts';

type ClusterNodes = Pick<ClusterSpec, 'nodes'>;
type VolumeOf = Pick<VserverSpec, 'name' | 'volume'>;

export type ReplicaRole = 'data' | 'tiebreaker';

/** The witness that breaks ties for this volume, if it needs one and the cluster has one. */
export function tiebreakerOf(spec: VolumeOf, cluster: ClusterNodes): string | undefined {
  if (spec.volume.replicas.length !== 2) return undefined;
  return cluster.nodes.find((n) => n.role === 'witness' && !spec.volume.replicas.includes(n.name))?.name;
}

/** What this node holds of the volume: a data replica, the tiebreaker, or nothing. */
export function replicaRoleOf(spec: VolumeOf, cluster: ClusterNodes, node: string): ReplicaRole | undefined {
  if (spec.volume.replicas.includes(node)) return 'data';
  if (tiebreakerOf(spec, cluster) === node) return 'tiebreaker';
  return undefined;
}

/** HOST:PORT of a node's replica of this volume (IPv6 in brackets). */
export function replicaAddress(cluster: ClusterNodes, node: string, port: number): string {
  const n = cluster.nodes.find((x) => x.name === node);
  const host = n?.addresses[0];
  if (!host) throw new Error(`node "${node}" is not in the cluster spec or has no address`);
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

export interface ReplicaPlan {
  role: ReplicaRole;
  /** The config written to the volume's replication.yaml on this node. */
  replication: ReplicationConfigFile;
}

export function replicaPlan(
  spec: VolumeOf,
  cluster: ClusterNodes,
  node: string,
  secretFile: string,
): ReplicaPlan {
  const role = replicaRoleOf(spec, cluster, node);
  if (!role)
    throw new Error(
      `node "${node}" holds no replica of volume "${spec.name}" (replicas: ${spec.volume.replicas.join(', ')})`,
    );
  const port = spec.volume.port;
  const tiebreaker = tiebreakerOf(spec, cluster);
  const peers = [
    ...spec.volume.replicas
      .filter((n) => n !== node)
      .map((n) => ({ node: n, address: replicaAddress(cluster, n, port), tiebreaker: false })),
    ...(tiebreaker && tiebreaker !== node
      ? [{ node: tiebreaker, address: replicaAddress(cluster, tiebreaker, port), tiebreaker: true }]
      : []),
  ];
  return {
    role,
    replication: {
      node,
      listen: replicaAddress(cluster, node, port),
      secretFile,
      peers,
      quorum: 'suspend-io',
      afterSplitBrain: 'disconnect',
      durableWrites: true,
      resyncRate: 0,
    },
  };
}

/**
 * Whether the config on disk differs from the planned one in what the plan decides (identity,
 * addresses, secret, peers, quorum); other settings (changed by `volume adjust`) are the operator's.
 */
export function replicationDiffers(onDisk: ReplicationConfigFile, planned: ReplicationConfigFile): boolean {
  const key = (c: ReplicationConfigFile) =>
    JSON.stringify([
      c.node,
      c.listen,
      c.secretFile,
      c.quorum,
      [...c.peers].sort((a, b) => a.node.localeCompare(b.node)).map((p) => [p.node, p.address, p.tiebreaker]),
    ]);
  return key(onDisk) !== key(planned);
}
