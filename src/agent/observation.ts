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

export function observeCluster(spec: ClusterSpec, snap: Snapshot, prev: ManagerState): Observation {
  const nodes = fullNodes(spec).map((name) => ({ name, lease: leaseOf(name, snap, prev), standby: false }));
  const alive = new Set(nodes.filter((n) => n.lease === 'alive').map((n) => n.name));
  const vservers = vserverSpecs(spec).map((v) => {
    const reports: Record<string, Report> = {};
    for (const [node, r] of Object.entries(snap.reports)) {
      const x = r.vservers[v.name];
      if (x && alive.has(node)) reports[node] = toReport(x);
    }
    // A replica counts as up to date only on a live node that says so (its disk state is the volume's own).
    const upToDate = v.volume.replicas.filter(
      (n) => alive.has(n) && snap.reports[n]?.replicas[v.name]?.upToDate === true,
    );
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
  return { maintenance: false, nodes, vservers };
}
