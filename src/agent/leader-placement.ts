/**
 * Where etcd's leader should be (pure). When the leader's node dies, the others first elect a new leader
 * (one to two election timeouts), and the new leader extends every lease by its TTL: a power cut of the
 * node that holds both the leader and a vserver costs that vserver about a second more of downtime than
 * a cut elsewhere. So the manager keeps the leadership on a node that runs no vserver, when there is one.
 */

export interface MemberView {
  node: string;
  id: string;
  healthy: boolean;
  witness: boolean;
}

export interface LeaderMove {
  to: MemberView;
  reason: string;
}

/** Nodes that must not lead when another can: standby ones, and the manager's (see `leaderMove`). */
export interface PlacementContext {
  /** Nodes in standby (being emptied, maybe to be removed: `node remove`): never given the leadership. */
  draining?: string[];
  /**
   * The manager's node: a power cut there already costs a manager election (a lease TTL); with the etcd
   * leader there too, every lease waits for an etcd election as well, and in a cluster with a short TTL
   * the nodes that run vservers can miss renewals long enough to fence themselves (lab-fencing, under
   * load). So the leader leaves it for a node that runs nothing and does not manage, when there is one.
   */
  manager?: string;
}

/**
 * `active`: how many vservers run on each node. Undefined: leave it. A leader on a node that runs
 * vservers moves to one that runs none (one that does not manage first); a leader on the manager's
 * node that runs none moves only to a node that runs none and does not manage.
 */
export function leaderMove(
  leaderId: string,
  members: MemberView[],
  active: Record<string, number>,
  { draining = [], manager }: PlacementContext = {},
): LeaderMove | undefined {
  const leader = members.find((m) => m.id === leaderId);
  if (!leader) return undefined;
  const runs = (node: string) => (active[node] ?? 0) > 0;
  const busy = runs(leader.node);
  if (!busy && leader.node !== manager) return undefined;
  const idle = members
    .filter((m) => m.healthy && m.id !== leaderId && !runs(m.node) && !draining.includes(m.node))
    .sort(
      (a, b) =>
        Number(a.node === manager) - Number(b.node === manager) ||
        Number(b.witness) - Number(a.witness) ||
        (a.node < b.node ? -1 : 1),
    );
  const to = busy ? idle[0] : idle.find((m) => m.node !== manager);
  if (!to) return undefined;
  return {
    to,
    reason: busy
      ? `${leader.node} runs ${active[leader.node]} vserver(s): a power cut there would also cost an etcd election and a lease extension`
      : `${leader.node} runs the manager: a power cut there would cost an etcd election on top of the manager's`,
  };
}
