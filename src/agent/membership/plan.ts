/**
 * Cluster membership changes (`cvserver node remove|add`), decided purely from what the agent reads:
 * the stored cluster spec with its removed nodes, the etcd members and which of them answer, the live
 * leases, and the replicas' reports. A change that would lose etcd's quorum or the last up-to-date
 * copy of a volume is refused with the reason; otherwise the answer is the ordered steps to take.
 */

/** A node of the stored cluster.yaml, and whether `node remove` took it out. */
export interface StoredNode {
  name: string;
  role: 'full' | 'witness';
  addresses: string[];
  removed: boolean;
}

/** An etcd member as MemberList gives it, and whether it answered a status request just now. */
export interface MemberView {
  id: string;
  /** Empty for a member added but never started. */
  name: string;
  peerUrls: string[];
  isLearner: boolean;
  up: boolean;
  /** Its client URLs (empty until it has started). */
  clientUrls?: string[];
  /** etcd's leader now (as the members that answered say). */
  leader: boolean;
}

/** One volume of the cluster: its replica nodes (removed ones left out) and those up to date now. */
export interface VolumeView {
  vserver: string;
  replicas: string[];
  /** Replicas a live node reports up to date. */
  upToDate: string[];
}

export type Refusal = { ok: false; refusal: string };

export type RemovalStep =
  /** The standby setting: its vservers move off one at a time, nothing new is placed on it. */
  | 'standby'
  /** Until no vserver runs on it any more. */
  | 'wait-moved'
  /** Its member leads etcd: the leadership goes to another voter first (no election when it leaves). */
  | 'move-leader'
  /**
   * In the stored spec: nothing is placed on it, the others drop its replicas, its agent stands down;
   * in the same transaction its standby setting is cleared (a node added again starts without it).
   */
  | 'mark-removed'
  /** etcd's MemberRemove. */
  | 'member-remove';

export interface RemovalInput {
  node: string;
  /** The node whose agent carries the change out (it must stay). */
  asker: string;
  nodes: StoredNode[];
  /** null: the cluster uses an external etcd (no member of its own). */
  members: MemberView[] | null;
  volumes: VolumeView[];
  /** Vservers assigned to the node now. */
  running: string[];
}

export type RemovalPlan =
  | {
      ok: true;
      steps: RemovalStep[];
      member: MemberView | undefined;
      /** With 'move-leader': the voter that takes etcd's leadership. */
      leaderTo: MemberView | undefined;
    }
  | Refusal;

const refuse = (refusal: string): Refusal => ({ ok: false, refusal });
const list = (xs: string[]) => (xs.length ? xs.join(', ') : 'none');

export function planRemoval(i: RemovalInput): RemovalPlan {
  const node = i.nodes.find((n) => n.name === i.node);
  const names = i.nodes.filter((n) => !n.removed).map((n) => n.name);
  if (!node) return refuse(`no node named "${i.node}" in the cluster (nodes: ${list(names)})`);
  const member = i.members?.find((m) => m.name === i.node || m.peerUrls.some((u) => hostOf(u, node)));
  const quorum = member && i.members ? quorumRefusal(i.node, member, i.members) : undefined;
  if (node.removed) {
    // Marked removed, its member still there: an earlier removal stopped before MemberRemove.
    if (member && !quorum) return { ok: true, steps: ['member-remove'], member, leaderTo: undefined };
    return (
      quorum ??
      refuse(
        `${i.node} is already removed (bring it back with: cvserver node add ${i.node} --address ${node.addresses.join(',')})`,
      )
    );
  }
  if (i.asker === i.node)
    return refuse(`run it from another node: ${i.node}'s own agent stands down once it is removed`);
  if (node.role === 'full' && !i.nodes.some((n) => n.name !== i.node && !n.removed && n.role === 'full'))
    return refuse(`${i.node} is the last node that can run vservers`);
  if (quorum) return quorum;

  for (const v of i.volumes) {
    if (!v.replicas.includes(i.node)) continue;
    const others = v.replicas.filter((r) => r !== i.node);
    const current = others.filter((r) => v.upToDate.includes(r));
    if (current.length === 0)
      return refuse(
        `${i.node} holds the last up-to-date replica of ${v.vserver}'s volume ` +
          (others.length
            ? `(its other replicas ${list(others)} are down or not up to date: wait for their resync)`
            : '(it has no other replica)'),
      );
  }

  const steps: RemovalStep[] = ['standby'];
  if (i.running.length) steps.push('wait-moved');
  const leaderTo = member?.leader
    ? i.members?.find((m) => m.id !== member.id && m.up && !m.isLearner)
    : undefined;
  if (leaderTo) steps.push('move-leader');
  steps.push('mark-removed');
  if (member) steps.push('member-remove');
  return { ok: true, steps, member, leaderTo };
}

export type AdditionStep =
  /** etcd's MemberAdd as a learner: no vote, no part of the quorum until promoted. */
  | 'member-add-learner'
  /** A removed node taken back in the stored spec (its entry and replicas are still there). */
  | 'unmark-removed'
  /** A node new to the stored cluster.yaml: its entry is appended. */
  | 'append-node';

export interface AdditionInput {
  node: string;
  addresses: string[];
  role: 'full' | 'witness';
  nodes: StoredNode[];
  members: MemberView[] | null;
  /** The peer URL the node's etcd member will listen on (its first address, the peer port). */
  peerUrl: string;
}

export type AdditionPlan =
  | { ok: true; steps: AdditionStep[]; member: MemberView | undefined; voters: number }
  | Refusal;

const NODE_NAME = /^[a-z][a-z0-9-]{0,30}$/;

export function planAddition(i: AdditionInput): AdditionPlan {
  if (!NODE_NAME.test(i.node))
    return refuse(
      `"${i.node}": expected a node name: a lowercase letter, then letters, digits, dashes (at most 31)`,
    );
  if (i.addresses.length === 0) return refuse('--address: expected at least one address');
  const node = i.nodes.find((n) => n.name === i.node);
  if (node && !node.removed)
    return refuse(`${i.node} is already a node of the cluster (${node.addresses.join(', ')})`);
  if (node && node.addresses.join(',') !== i.addresses.join(','))
    return refuse(
      `${i.node} was removed at ${node.addresses.join(',')}: it comes back with the same addresses (or under a new name)`,
    );
  if (node && node.role !== i.role)
    return refuse(`${i.node} was a ${node.role} node: it comes back as one (or under a new name)`);
  for (const other of i.nodes)
    if (other.name !== i.node)
      for (const a of i.addresses)
        if (other.addresses.includes(a))
          return refuse(
            `${a} is an address of node ${other.name}${other.removed ? ' (removed; its entry keeps it)' : ''}`,
          );

  const steps: AdditionStep[] = [];
  let member: MemberView | undefined;
  if (i.members) {
    member = i.members.find((m) => m.peerUrls.includes(i.peerUrl));
    const named = i.members.find((m) => m.name === i.node);
    if (named && named !== member)
      return refuse(
        `etcd still has a member named ${i.node} (id ${named.id}, ${named.peerUrls.join(', ')}): remove it first`,
      );
    if (member && member.name !== '' && member.name !== i.node)
      return refuse(`${i.peerUrl} is the peer URL of etcd member ${member.name} (id ${member.id})`);
    // Added by an earlier `node add` that did not finish: kept, not added twice.
    if (!member) steps.push('member-add-learner');
  }
  steps.push(node ? 'unmark-removed' : 'append-node');
  const voters = (i.members ?? []).filter((m) => !m.isLearner).length;
  return { ok: true, steps, member, voters };
}

/** The etcd member's initial cluster for a node joining with `--initial-cluster-state existing`. */
export function joiningCluster(
  members: Pick<MemberView, 'id' | 'name' | 'peerUrls'>[],
  node: string,
  peerUrl: string,
): { name: string; peerUrl: string }[] | Refusal {
  if (!members.some((m) => m.peerUrls.includes(peerUrl)))
    return refuse(
      `etcd has no member at ${peerUrl} yet: run cvserver node add ${node} --address ... on a node of the cluster first`,
    );
  const out: { name: string; peerUrl: string }[] = [];
  for (const m of members) {
    const mine = m.peerUrls.includes(peerUrl);
    // etcd matches the members by peer URL: one added but never started (no name yet) still counts.
    const name = mine ? node : m.name || `unstarted-${m.id}`;
    for (const u of m.peerUrls) out.push({ name, peerUrl: u });
  }
  return out;
}

/** Why taking `member` out would leave etcd without a majority of its voters up (undefined: it would not). */
function quorumRefusal(node: string, member: MemberView, members: MemberView[]): Refusal | undefined {
  if (member.isLearner) return undefined;
  const rest = members.filter((m) => !m.isLearner && m.id !== member.id);
  const up = rest.filter((m) => m.up);
  if (rest.length === 0) return refuse(`${node} holds etcd's only voting member`);
  if (up.length * 2 <= rest.length)
    return refuse(
      `removing ${node} would lose etcd's quorum: of the ${rest.length} voting members left (${list(rest.map(memberName))}), ` +
        `only ${up.length} answer (${list(up.map(memberName))}); a majority must be up: bring the others back first`,
    );
  return undefined;
}

function memberName(m: MemberView): string {
  return m.name || m.peerUrls[0] || m.id;
}

function hostOf(url: string, node: StoredNode): boolean {
  try {
    return new URL(url).hostname === node.addresses[0];
  } catch {
    return false;
  }
}
