/**
 * `cvserver status`: the cluster as one node's agent sees it — nodes and their leases, the etcd members
 * and their health, the manager, every vserver with its node, state, epoch and replicas, and the
 * membership mesh's matrix of who sees whom on which link.
 */
import { type ClusterSpec, fullNodes, vserverSpecs } from '../cluster/config.ts';
import { errorMessage } from '../lib/errors.ts';
import type { Agent } from './agent.ts';
import { type BackupStatus, backupStatusOf, CLUSTER_JOB } from './backups.ts';
import { formatsOf, rangeText, UNRECORDED_FORMAT } from './format.ts';
import type { MeshReport } from './mesh/view.ts';

export interface ClusterStatus {
  cluster: string;
  node: string;
  manager: string | null;
  /** Maintenance mode: who turned it on and when (ms), or null. */
  maintenance: { by: string; at: number } | null;
  configApplied: boolean;
  /** The stored format the cluster uses (format.ts): its record, or 1 when there is none yet. */
  format: number;
  local: {
    lease: string | null;
    leaseValidFor: number | null;
    fenced: boolean;
    storeAgeMs: number | null;
    lastError: string;
    /** Why this node's agent does not act on the cluster (rolling upgrade, state set aside), '' when it does. */
    refusal: string;
  };
  nodes: {
    name: string;
    role: string;
    addresses: string[];
    lease: 'alive' | 'expired';
    agentVersion: string | null;
    /** The stored formats its agent reads and writes, e.g. "1-1" (null while its lease is not alive). */
    formats: string | null;
    fenced: boolean;
    /** In standby (its vservers move off): who set it and when (ms), or null. */
    standby: { by: string; at: number } | null;
  }[];
  etcd: { endpoint: string; healthy: boolean; leader: boolean; version: string; error: string }[];
  vservers: {
    name: string;
    desired: string;
    /** Removed from cluster.yaml: kept stopped with its data. */
    retired: boolean;
    node: string | null;
    epoch: number;
    status: string;
    since: number | null;
    failed: string | null;
    address: string | null;
    /** Restarts in place since it was last assigned to its node. */
    restarts: number;
    /** Relocations and failures the manager still counts (within policy.failure_timeout). */
    relocations: number;
    failures: number;
    replicas: {
      node: string;
      role: string;
      diskState: string;
      upToDate: boolean;
      epoch: number;
      /** null: not reported (an agent of before these, or no replication status yet). */
      outOfSyncBytes: number | null;
      resyncBytesPerSecond: number | null;
      suspendedWrites: number | null;
      splitBrain: boolean | null;
    }[];
    /** Its scheduled backup (docs/backup.md), null without a schedule (absent: an older agent). */
    backup?: BackupStatus | null;
  }[];
  /** The scheduled backup of the cluster's own state (etcd, cluster.yaml), null without a backup section. */
  clusterBackup?: BackupStatus | null;
  problems: string[];
  /** The membership mesh: who sees whom on which link (`matrix`), and this node's links in detail. */
  mesh: MeshReport | null;
}

export async function clusterStatus(agent: Agent, members = true): Promise<ClusterStatus> {
  const v = agent.view();
  const snap = v.snapshot;
  const spec = v.spec;
  const etcd = await Promise.all(
    (members ? memberEndpoints(agent.boot) : []).map(async (endpoint) => {
      try {
        const s = await agent.store.client.status(endpoint);
        return { endpoint, healthy: true, leader: s.leader === s.memberId, version: s.version, error: '' };
      } catch (err) {
        return { endpoint, healthy: false, leader: false, version: '', error: errorMessage(err) };
      }
    }),
  );
  const table = snap?.state?.table ?? {};
  const mstate = snap?.state?.state;
  const appliedAt = snap?.config?.appliedAt ?? Date.now(); // backups: a schedule counts from its apply
  return {
    cluster: spec.cluster,
    node: v.node,
    manager: snap?.manager?.node ?? null,
    maintenance: snap?.maintenance ? { by: snap.maintenance.by, at: snap.maintenance.at } : null,
    configApplied: snap?.config !== undefined,
    format: snap?.format?.format ?? UNRECORDED_FORMAT,
    local: {
      lease: v.leaseId,
      leaseValidFor: v.leaseValidFor,
      fenced: v.local.fenced,
      storeAgeMs: v.snapshotAgeMs,
      lastError: v.lastError,
      refusal: v.refusal,
    },
    nodes: spec.nodes.map((n) => ({
      name: n.name,
      role: n.role,
      addresses: n.addresses,
      lease: snap?.nodes[n.name] ? 'alive' : 'expired',
      agentVersion: snap?.nodes[n.name]?.agentVersion ?? null,
      formats: snap?.nodes[n.name] ? rangeText(formatsOf(snap.nodes[n.name]!)) : null,
      fenced: snap?.reports[n.name]?.fenced ?? false,
      standby: snap?.standby[n.name] ? { by: snap.standby[n.name]!.by, at: snap.standby[n.name]!.at } : null,
    })),
    etcd,
    vservers: vserverSpecs(spec).map((vs) => {
      const a = table[vs.name];
      const r = a ? snap?.reports[a.node]?.vservers[vs.name] : undefined;
      return {
        name: vs.name,
        desired: vs.desired,
        retired: snap?.config?.retired[vs.name] !== undefined,
        node: a?.node ?? null,
        epoch: a?.epoch ?? mstate?.vservers[vs.name]?.epoch ?? 0,
        status: a ? (r?.status ?? 'unreported') : mstate?.vservers[vs.name]?.lastWait || 'not placed',
        since: r?.since ?? null,
        failed: mstate?.vservers[vs.name]?.failed ?? null,
        address: vs.definition.network?.addresses[0]?.split('/')[0] ?? null,
        restarts: a?.restarts ?? 0,
        relocations: mstate?.vservers[vs.name]?.relocations.length ?? 0,
        failures: mstate?.vservers[vs.name]?.failures.length ?? 0,
        replicas: vs.volume.replicas
          .filter((n) => fullNodes(spec).includes(n))
          .map((n) => {
            const rep = snap?.reports[n]?.replicas[vs.name];
            return {
              node: n,
              role: rep?.role ?? (snap?.nodes[n] ? 'unknown' : 'unreachable'),
              diskState: rep?.diskState ?? '',
              upToDate: rep?.upToDate ?? false,
              epoch: rep?.epoch ?? 0,
              outOfSyncBytes: rep?.outOfSyncBytes ?? null,
              resyncBytesPerSecond: rep?.resyncBytesPerSecond ?? null,
              suspendedWrites: rep?.suspendedWrites ?? null,
              splitBrain: rep?.splitBrain ?? null,
            };
          }),
        backup: spec.backups[vs.name]
          ? backupStatusOf(spec.backups[vs.name]!.schedule, snap?.backups[vs.name], appliedAt, Date.now())
          : null,
      };
    }),
    clusterBackup: spec.backup
      ? backupStatusOf(spec.backup.cluster_schedule, snap?.backups[CLUSTER_JOB], appliedAt, Date.now())
      : null,
    problems: snap?.problems ?? [],
    mesh: meshReportOf(agent),
  };
}

/** The mesh as this agent sees it (null before it started). */
export function meshReportOf(agent: Pick<Agent, 'mesh'>): MeshReport | null {
  return agent.mesh?.report() ?? null;
}

/** Every etcd member's client address (or the external endpoints). */
function memberEndpoints(spec: ClusterSpec): string[] {
  if (spec.etcd.endpoints.length) return spec.etcd.endpoints;
  return spec.nodes.map((n) => `https://${n.addresses[0]}:${spec.etcd.client_port}`);
}
