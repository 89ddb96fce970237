/**
 * From what is stored in etcd to what the manager's `step()` takes (pure): nodes with their lease,
 * vservers with their placement, the nodes' reports and which replicas are up to date.
 */
import { type ClusterSpec, fullNodes, vserverSpecs } from '../cluster/config.ts';
import type { LeaseStatus, ManagerState, Observation, Report } from '../cluster/types.ts';
import { toReport } from './records.ts';
import type { Snapshot } from './store.ts';

export function leaseOf(node: string, snap: Snapshot, prev: ManagerState): LeaseStatus {
  if (snap.nodes[node]) return 'alive';
  const seen = prev.nodes[node];
  return seen !== undefined && !seen.startsWith('never') ? 'expired' : 'never';
}

/** How long a freshly started agent may take to report its replicas before placement goes on without it. */
export const REPLICA_REPORT_GRACE_MS = 10_000;

export function observeCluster(
  spec: ClusterSpec,
  snap: Snapshot,
  prev: ManagerState,
  nowMs: number,
): Observation {
  const nodes = fullNodes(spec).map((name) => ({
    name,
    lease: leaseOf(name, snap, prev),
    standby: snap.standby[name] !== undefined,
  }));
  const alive = new Set(nodes.filter((n) => n.lease === 'alive').map((n) => n.name));
  const vservers = vserverSpecs(spec).map((v) => {
    const reports: Record<string, Report> = {};
    for (const [node, r] of Object.entries(snap.reports)) {
      const x = r.vservers[v.name];
      if (x && alive.has(node)) reports[node] = toReport(x);
    }
    // A replica counts as up to date only on a live node that says so (its disk state is the volume's own).
    let upToDate = v.volume.replicas.filter(
      (n) => alive.has(n) && snap.reports[n]?.replicas[v.name]?.upToDate === true,
    );
    // A vserver not placed yet waits for every live replica node that started recently to report its
    // replica: else the first node to report would win over the preferred one (a race at cluster start).
    const pending = v.volume.replicas.some(
      (n) =>
        alive.has(n) &&
        !snap.reports[n]?.replicas[v.name] &&
        nowMs - (snap.nodes[n]?.startedAt ?? 0) < REPLICA_REPORT_GRACE_MS,
    );
    const placed = prev.vservers[v.name]?.node;
    if (pending && !placed) upToDate = [];
    return {
      name: v.name,
      desired: v.desired,
      preferred: v.placement.preferred,
      avoid: v.placement.avoid,
      antiAffinity: v.placement.antiAffinity,
      upToDate,
      stale: v.volume.replicas.filter((n) => !upToDate.includes(n)),
      reports,
    };
  });
  return { maintenance: snap.maintenance !== undefined, nodes, vservers };
}
