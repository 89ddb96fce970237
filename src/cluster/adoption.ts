/**
 * What an agent that starts again finds running on its node (its vservers' processes outlive it), and
 * what it does with each (pure). It keeps a vserver running only if nothing can have moved it: the
 * node's lease never ended (the manager moves a vserver only once the lease has ended), and the
 * assignment table still gives it to this node with the epoch its volume carries. Everything else that
 * runs is stopped hard, as a leftover of an earlier life.
 */
import type { AssignmentTable } from './assignments.ts';
import type { LocalVserver } from './node.ts';

export interface FoundVserver {
  vserver: string;
  /** The container runs (crun says so). */
  running: boolean;
  /** Its volume is primary here. */
  primary: boolean;
  /** The volume's promotion epoch. */
  epoch: number;
  /** Every health check passes (or it has none). */
  healthy: boolean;
}

export interface AdoptionPlan {
  /** The node's vservers from now on, as the node step keeps them. */
  vservers: Record<string, LocalVserver>;
  /** Leftovers to stop hard before anything else. */
  stop: { vserver: string; reason: string }[];
  /** One line per vserver found, with the reason. */
  log: string[];
}

/**
 * `leaseValid`: a renewal of the lease the earlier agent held was acknowledged (sent at `now` or later);
 * `table`: the assignment table read after it (null: not read, so nothing is adopted).
 */
export function planAdoption(
  node: string,
  found: FoundVserver[],
  table: AssignmentTable | null,
  leaseValid: boolean,
  now: number,
): AdoptionPlan {
  const plan: AdoptionPlan = { vservers: {}, stop: [], log: [] };
  const stop = (f: FoundVserver, why: string) => {
    const reason = `left over from an earlier agent: ${why}`;
    plan.stop.push({ vserver: f.vserver, reason });
    plan.log.push(`${f.vserver}: stop hard: ${reason}`);
  };
  for (const f of [...found].sort((a, b) => a.vserver.localeCompare(b.vserver))) {
    if (!f.running && !f.primary) continue;
    const a = table?.[f.vserver];
    if (!leaseValid) stop(f, "this node's lease has ended (the cluster may have moved it)");
    else if (table === null) stop(f, 'the assignment table could not be read');
    else if (!a || a.node !== node) stop(f, `assigned to ${a ? a.node : 'no node'} now`);
    else if (f.epoch !== a.epoch) stop(f, `its volume has epoch ${f.epoch}, the assignment ${a.epoch}`);
    else if (!f.running) stop(f, 'its volume is primary but its container does not run');
    else {
      const status = f.healthy ? 'healthy' : 'running';
      plan.vservers[f.vserver] = { status, since: now, epoch: a.epoch, restarts: a.restarts };
      plan.log.push(
        `${f.vserver}: adopted, ${status} with epoch ${a.epoch}: still assigned here and the lease never ended`,
      );
    }
  }
  return plan;
}
