/**
 * The cluster's safety properties as pure checks over a cluster-wide snapshot. The simulator runs them
 * after every tick; the agent's tests can run them over what they observe. Each returns the violations
 * (empty when it holds), one sentence each.
 */
import type { Command, ManagerState, Observation } from './types.ts';

/** What really runs on one node, and the lease it believes it holds. */
export interface NodeSnapshot {
  name: string;
  /** Vservers whose resources are up on this node (started, running, failed or being stopped). */
  active: string[];
  /** The node's own `leaseUntil` (null: no lease). */
  leaseUntil: number | null;
}

export interface ClusterSnapshot {
  now: number;
  /** Powered nodes (a node without power runs nothing). */
  nodes: NodeSnapshot[];
}

/** Never two nodes with the same vserver active: one writer per volume. */
export function checkSingleWriter(snap: ClusterSnapshot): string[] {
  const on = new Map<string, string[]>();
  for (const n of snap.nodes)
    for (const v of n.active) {
      const list = on.get(v) ?? [];
      list.push(n.name);
      on.set(v, list);
    }
  return [...on].filter(([, ns]) => ns.length > 1).map(([v, ns]) => `${v} running on ${ns.join(' and ')}`);
}

/**
 * A node never runs a vserver when its lease could have ended by its own reckoning: the store expires a
 * lease at `leaseUntil` at the earliest, and the manager may then start the vserver elsewhere.
 */
export function checkLeaseCoversRunning(snap: ClusterSnapshot): string[] {
  const out: string[] = [];
  for (const n of snap.nodes) {
    if (n.active.length === 0) continue;
    if (n.leaseUntil === null) out.push(`${n.name} runs ${n.active.join(', ')} without a lease`);
    else if (snap.now >= n.leaseUntil)
      out.push(`${n.name} runs ${n.active.join(', ')} at ${snap.now} but its lease ends at ${n.leaseUntil}`);
  }
  return out;
}

/** Every assignment goes to a node with an up-to-date replica, an alive lease and no standby. */
export function checkAssignment(obs: Observation, commands: Command[]): string[] {
  const out: string[] = [];
  const nodes = new Map(obs.nodes.map((n) => [n.name, n]));
  for (const c of commands) {
    if (c.kind !== 'assign') continue;
    const v = obs.vservers.find((x) => x.name === c.vserver);
    if (!v?.upToDate.includes(c.node))
      out.push(`${c.vserver} assigned to ${c.node} without an up-to-date replica`);
    const n = nodes.get(c.node);
    if (n?.lease !== 'alive' || n.standby)
      out.push(`${c.vserver} assigned to ${c.node} whose lease is ${n?.lease} or in standby`);
  }
  return out;
}

/**
 * Assignment epochs strictly increase per vserver. `highest` (vserver -> highest epoch seen so far) is
 * returned updated, not modified.
 */
export function checkEpochs(
  highest: Record<string, number>,
  commands: Command[],
): { highest: Record<string, number>; violations: string[] } {
  const next = { ...highest };
  const violations: string[] = [];
  for (const c of commands) {
    if (c.kind !== 'assign') continue;
    const top = next[c.vserver] ?? 0;
    if (c.epoch <= top) violations.push(`${c.vserver} epoch ${c.epoch} not above ${top}`);
    next[c.vserver] = Math.max(top, c.epoch);
  }
  return { highest: next, violations };
}

/** Outside maintenance, no vserver stays assigned to a node whose lease is not alive. */
export function checkNoDeadOwner(obs: Observation, state: ManagerState): string[] {
  if (obs.maintenance) return [];
  const nodes = new Map(obs.nodes.map((n) => [n.name, n]));
  const out: string[] = [];
  for (const [v, s] of Object.entries(state.vservers))
    if (s.node && nodes.get(s.node)?.lease !== 'alive')
      out.push(`${v} still assigned to ${s.node} whose lease is ${nodes.get(s.node)?.lease}`);
  return out;
}
