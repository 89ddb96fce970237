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

/**
 * `active`: how many vservers run on each node; `draining`: nodes in standby, never given the leadership
 * (idle because they are being emptied, maybe to be removed: `node remove`). Undefined: leave it.
 */
export function leaderMove(
  leaderId: string,
  members: MemberView[],
  active: Record<string, number>,
  draining: string[] = [],
): LeaderMove | undefined {
  const leader = members.find((m) => m.id === leaderId);
  if (!leader || (active[leader.node] ?? 0) === 0) return undefined;
  const idle = members
    .filter(
      (m) => m.healthy && m.id !== leaderId && (active[m.node] ?? 0) === 0 && !draining.includes(m.node),
    )
    .sort((a, b) => Number(b.witness) - Number(a.witness) || (a.node < b.node ? -1 : 1));
  const to = idle[0];
  if (!to) return undefined;
  return {
    to,
    reason: `${leader.node} runs ${active[leader.node]} vserver(s): a power cut there would also cost an etcd election and a lease extension`,
  };
}
