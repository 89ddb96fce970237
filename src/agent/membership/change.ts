/**
 * `cvserver node remove|add`, the agent's side (the imperative shell around plan.ts): what it reads
 * (the stored spec, etcd's members and which answer, the replicas' reports), and the writes — the
 * stored config record (one transaction over the record read) and etcd's MemberAdd/MemberRemove.
 * The CLI (src/cli/node-membership.ts) moves the node's vservers off in between (standby).
 */
import { isMap, isSeq, parseDocument } from 'yaml';
import { type ClusterSpec, parseClusterConfig } from '../../cluster/config.ts';
import { errorMessage, UserError } from '../../lib/errors.ts';
import type { Agent } from '../agent.ts';
import type { EtcdClient, TxnOp } from '../etcd/client.ts';
import { type ConfigRecord, RECORD_VERSION } from '../records.ts';
import type { Snapshot } from '../store.ts';
import {
  type AdditionStep,
  type MemberView,
  planAddition,
  planRemoval,
  type RemovalStep,
  type StoredNode,
  type VolumeView,
} from './plan.ts';

const TIMEOUT_MS = 2000;

export interface RemovalAnswer {
  node: string;
  steps: RemovalStep[];
  /** Vservers assigned to the node when asked (they move off first). */
  running: string[];
  /** Done (commit): the steps taken. */
  done: RemovalStep[];
}

export interface AdditionAnswer {
  node: string;
  steps: AdditionStep[];
  /** etcd member id of the node (a learner until its agent has caught up), null with an external etcd. */
  memberId: string | null;
  /** The command to start the node's agent with. */
  start: string;
}

/** The node's removal checked (`commit` false) or carried out (its vservers must have moved off). */
export async function removeNode(
  agent: Agent,
  node: string,
  by: string,
  commit: boolean,
): Promise<RemovalAnswer> {
  const snap = await freshSnapshot(agent);
  const members = await memberViews(agent);
  const running = Object.entries(snap.state?.table ?? {})
    .filter(([, a]) => a.node === node)
    .map(([v]) => v);
  const plan = planRemoval({
    node,
    asker: agent.o.node,
    nodes: storedNodes(agent, snap),
    members,
    volumes: volumeViews(agent.spec, snap),
    running,
  });
  if (!plan.ok) throw new UserError(`node remove ${node}: refused: ${plan.refusal} (nothing changed)`);
  const answer: RemovalAnswer = { node, steps: plan.steps, running, done: [] };
  if (!commit) return answer;
  if (running.length)
    throw new UserError(
      `node remove ${node}: ${running.join(', ')} still assigned to it (the standby moves them off first)`,
    );
  if (plan.member && plan.leaderTo) {
    // Its agent stops its member as soon as it reads the mark: etcd would hold an election then.
    const from = memberEndpoint(plan.member);
    if (from) {
      await agent.store.client.moveLeader(from, plan.leaderTo.id, { timeoutMs: TIMEOUT_MS * 2 });
      answer.done.push('move-leader');
      agent.operatorEvent(`${node}: etcd leadership moved to ${plan.leaderTo.name} before its removal`);
    }
  }
  if (plan.steps.includes('mark-removed')) {
    await writeConfig(
      agent,
      snap,
      (c) => ({ ...c, removed: { ...c.removed, [node]: { at: Date.now(), by } } }),
      [agent.store.keys.standby(node)],
    );
    answer.done.push('mark-removed');
    agent.operatorEvent(
      `${node}: removed from the cluster by ${by}: nothing is placed on it, its replicas leave the volumes' peers, its agent stands down`,
    );
  }
  if (plan.member) {
    await agent.store.client
      .memberRemove(plan.member.id, { timeoutMs: TIMEOUT_MS * 2 })
      .catch((err: unknown) => {
        throw new UserError(
          `${node} is marked removed, but its etcd member ${plan.member!.id} was not removed (${errorMessage(err)}): run cvserver node remove ${node} again`,
        );
      });
    answer.done.push('member-remove');
    agent.operatorEvent(`${node}: etcd member ${plan.member.id} removed by ${by}`);
  }
  return answer;
}

/** The node added: an etcd learner first, then a member of the stored spec (its agent may start). */
export async function addNode(
  agent: Agent,
  node: string,
  addresses: string[],
  role: 'full' | 'witness',
  by: string,
): Promise<AdditionAnswer> {
  const snap = await freshSnapshot(agent);
  const external = agent.boot.etcd.endpoints.length > 0;
  const members = await memberViews(agent);
  const peerUrl = `https://${addresses[0]}:${agent.boot.etcd.peer_port}`;
  const plan = planAddition({ node, addresses, role, nodes: storedNodes(agent, snap), members, peerUrl });
  if (!plan.ok) throw new UserError(`node add ${node}: refused: ${plan.refusal} (nothing changed)`);
  // The spec as it will be, checked before anything is written (cluster.yaml's own rules).
  const next = (c: ConfigRecord): ConfigRecord => {
    const { [node]: _, ...removed } = c.removed;
    return plan.steps.includes('append-node')
      ? { ...c, yaml: withNodeEntry(c.yaml, { name: node, role, addresses }), removed }
      : { ...c, removed };
  };
  const cur = snap.config;
  if (!cur) throw new UserError('node add: no cluster.yaml applied yet (cvserver apply FILE first)');
  parseClusterConfig(next(cur).yaml, `${cur.file} (with ${node})`);
  let memberId = plan.member?.id ?? null;
  if (plan.steps.includes('member-add-learner')) {
    const added = await agent.store.client.memberAdd([peerUrl], true, { timeoutMs: TIMEOUT_MS * 2 });
    memberId = added.member.id;
    agent.operatorEvent(`${node}: etcd member ${memberId} added as a learner at ${peerUrl} by ${by}`);
  }
  await writeConfig(agent, snap, next);
  agent.operatorEvent(
    `${node}: added to the cluster by ${by} (${addresses.join(', ')}): its agent may start (--initial-cluster-state existing)`,
  );
  return {
    node,
    steps: plan.steps,
    memberId: external ? null : memberId,
    start: `cvserver agent --config CLUSTER.yaml --node ${node}${external ? '' : ' --initial-cluster-state existing'}`,
  };
}

/** A node entry appended to cluster.yaml's `nodes` (comments and layout kept). */
export function withNodeEntry(
  yaml: string,
  entry: { name: string; role: 'full' | 'witness'; addresses: string[] },
): string {
  const doc = parseDocument(yaml);
  const nodes = doc.get('nodes');
  if (!isSeq(nodes) || !isMap(doc.contents))
    throw new UserError('the stored cluster.yaml has no list of nodes');
  nodes.add(doc.createNode(entry.role === 'full' ? { name: entry.name, addresses: entry.addresses } : entry));
  return doc.toString();
}

async function freshSnapshot(agent: Agent): Promise<Snapshot> {
  return agent.store.snapshot(TIMEOUT_MS);
}

function storedNodes(agent: Agent, snap: Snapshot): StoredNode[] {
  const spec: ClusterSpec = snap.config ? agent.stored : agent.boot;
  return spec.nodes.map((n) => ({
    name: n.name,
    role: n.role,
    addresses: n.addresses,
    removed: snap.config?.removed[n.name] !== undefined,
  }));
}

function volumeViews(spec: ClusterSpec, snap: Snapshot): VolumeView[] {
  return Object.values(spec.vservers).map((v) => ({
    vserver: v.name,
    replicas: v.volume.replicas,
    upToDate: v.volume.replicas.filter(
      (r) => snap.nodes[r] !== undefined && snap.reports[r]?.replicas[v.name]?.upToDate === true,
    ),
  }));
}

/** etcd's members, each asked for its status (null: an external etcd, not the cluster's to change). */
async function memberViews(agent: Agent): Promise<MemberView[] | null> {
  if (agent.boot.etcd.endpoints.length > 0) return null;
  const client: EtcdClient = agent.store.client;
  const list = await client.memberList({ timeoutMs: TIMEOUT_MS });
  return Promise.all(
    list.map(async (m) => {
      const endpoint = memberEndpoint(m);
      const s = endpoint
        ? await client.status(endpoint, { timeoutMs: 1000 }).catch(() => undefined)
        : undefined;
      return {
        id: m.id,
        name: m.name,
        peerUrls: m.peerUrls,
        clientUrls: m.clientUrls,
        isLearner: m.isLearner,
        up: s !== undefined,
        leader: s !== undefined && s.leader === s.memberId,
      };
    }),
  );
}

/** A member's client URL that other nodes reach (not its loopback one). */
function memberEndpoint(m: { clientUrls?: string[] }): string | undefined {
  return m.clientUrls?.find((u) => !/\/\/(127\.|localhost|\[::1\])/.test(u));
}

/**
 * Rewrites the stored config record over the one read (a concurrent apply or change: try again),
 * deleting `alsoDelete` in the same transaction.
 */
async function writeConfig(
  agent: Agent,
  snap: Snapshot,
  change: (c: ConfigRecord) => ConfigRecord,
  alsoDelete: string[] = [],
): Promise<void> {
  const cur = snap.config;
  if (!cur) throw new UserError('no cluster.yaml applied yet (cvserver apply FILE first)');
  const { modRevision, ...record } = cur;
  const next = { ...change(record), version: RECORD_VERSION };
  const key = agent.store.keys.config;
  const r = await agent.store.client.txn(
    {
      compare: [{ key, target: 'modRevision', op: '=', value: modRevision }],
      success: [
        { op: 'put', key, value: JSON.stringify(next) },
        ...alsoDelete.map((k): TxnOp => ({ op: 'delete', key: k })),
      ],
    },
    { timeoutMs: TIMEOUT_MS },
  );
  if (!r.succeeded)
    throw new UserError('the stored configuration changed meanwhile (an apply?): run the command again');
}
