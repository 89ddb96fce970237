/**
 * Where etcd's leader should be (pure). When the leader's node dies, the others first elect a new leader
 * (one to two election timeouts), and the new leader extends every lease by its TTL: a power cut of the
 * node that holds both the leader and a vserver costs that vserver about a second more of downtime than
 * a cut elsewhere, and with a short TTL the election alone can make other nodes fence. So the manager
 * keeps the leadership where a loss disturbs least (`placeRank`).
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
  /** The manager's node. */
  manager?: string;
}

/**
 * How bad a place for the leader a member is (lower is better). Losing the leader's node costs every
 * lease an etcd election, and with a short TTL the nodes that run vservers can miss renewals for long
 * enough to fence themselves (seen in the lab under load: elections of 1.5 s). So the leader goes where
 * a loss disturbs least: a full node that runs nothing and does not manage (its loss costs nothing
 * else); then the manager's node if it runs nothing (its loss already costs a manager election); then a
 * witness (a small machine, the likeliest to be lost, and its loss must change nothing); last a node
 * that runs vservers (its loss also costs a failover).
 */
function placeRank(m: MemberView, active: Record<string, number>, manager: string | undefined): number {
  if ((active[m.node] ?? 0) > 0) return 3;
  if (m.witness) return 2;
  return m.node === manager ? 1 : 0;
}

const WHY = [
  '',
  "runs the manager: a power cut there would cost an etcd election on top of the manager's",
  'is a witness: losing it must change nothing, and an etcd election can make nodes fence',
];

/**
 * `active`: how many vservers run on each node. Undefined: leave it (the leader is where a loss
 * disturbs least among the healthy members not in standby).
 */
export function leaderMove(
  leaderId: string,
  members: MemberView[],
  active: Record<string, number>,
  { draining = [], manager }: PlacementContext = {},
): LeaderMove | undefined {
  const leader = members.find((m) => m.id === leaderId);
  if (!leader) return undefined;
  const rank = (m: MemberView) => placeRank(m, active, manager);
  const to = members
    .filter((m) => m.healthy && m.id !== leaderId && !draining.includes(m.node))
    .sort((a, b) => rank(a) - rank(b) || (a.node < b.node ? -1 : 1))[0];
  if (!to || rank(to) >= rank(leader)) return undefined;
  const why =
    rank(leader) === 3
      ? `runs ${active[leader.node]} vserver(s): a power cut there would also cost an etcd election and a lease extension`
      : WHY[rank(leader)];
  return { to, reason: `${leader.node} ${why}` };
}
