/**
 * The invariants, checked after every step of a simulation:
 * - every acknowledged write is on the serving primary and on every replica it counts as in sync;
 * - no acknowledged write is lost (some disk still holds it), unless it was never flushed and every
 *   node that held it lost power since;
 * - never two primaries that could acknowledge writes (unfenced, with quorum);
 * - replicas identical when all are connected and idle (and, at the end, converged).
 */

import type { ReplicationStatus } from '../../../src/volume/replication/replicated-device.ts';
import { BLOCK, stampOf } from './model.ts';
import type { SimNode } from './sim-node.ts';
import type { Simulation } from './simulation.ts';

export interface Violation {
  kind: string;
  detail: string;
}

function blockOf(node: SimNode, block: number): Buffer {
  const disk = node.disk!;
  const view = node.up ? disk.current : disk.durable;
  return view.subarray(block * BLOCK, (block + 1) * BLOCK);
}

export function check(sim: Simulation, o: { converged?: boolean } = {}): Violation | undefined {
  const { model } = sim;
  // Durability: each acknowledged write is still somewhere.
  for (const [b, w] of model.known()) {
    if (sim.dataNodes.some((n) => blockOf(n, b).equals(w.data))) continue;
    if (model.mayBeLost(w)) {
      model.uncertain.add(b);
      continue;
    }
    const where = sim.dataNodes.map((n) => `${n.name}:${stampOf(blockOf(n, b))}`).join(' ');
    return {
      kind: 'acknowledged write lost',
      detail: `block ${b} stamp ${w.stamp} (acked at step ${w.ackedAtStep}, flushed ${w.flushed}, held by ${[...w.holders].join(',')}) is on no disk; disks hold ${where}`,
    };
  }

  // Each device's status, once per check.
  const status = new Map<SimNode, ReplicationStatus>();
  for (const n of sim.nodes) {
    const d = n.proc?.device;
    if (d) status.set(n, d.status());
  }
  // With quorum, data never diverges: a split-brain is a bug.
  for (const [n, st] of status) {
    if (sim.cfg.quorum === 'off') continue;
    const sb = st.peers.find((x) => x.connection === 'SplitBrain');
    if (sb)
      return { kind: 'split-brain with quorum on', detail: `${n.name} with ${sb.node}: ${sb.lastError}` };
  }

  // At most one primary able to acknowledge writes.
  const acking = [...status].filter(
    ([, st]) => st.role === 'Primary' && !st.fenced && st.quorum.hasQuorum && st.quorum.policy !== 'off',
  );
  if (acking.length > 1)
    return {
      kind: 'two primaries with quorum',
      detail: acking.map(([n, st]) => `${n.name} epoch ${st.epoch}`).join(', '),
    };

  const p = sim.primary;
  const device = p?.proc?.device;
  if (p && device && device.role === 'Primary') {
    const st = status.get(p)!;
    if (!st.fenced) {
      const inSync = sim.dataNodes.filter((n) => {
        if (n === p || !n.up) return false;
        const peer = st.peers.find((x) => x.node === n.name);
        return (
          peer?.connection === 'Connected' && peer.outOfSyncBytes === 0 && n.meta.diskState === 'UpToDate'
        );
      });
      for (const [b, w] of model.known()) {
        const holders: SimNode[] = [p, ...inSync];
        for (const n of holders) {
          const have = blockOf(n, b);
          if (have.equals(w.data)) continue;
          if (n === p && model.mayBeLost(w)) {
            model.uncertain.add(b);
            break;
          }
          return {
            kind: n === p ? 'primary serves stale data' : 'in-sync replica lacks an acknowledged write',
            detail: `${n.name} block ${b} holds stamp ${stampOf(have)}, acknowledged stamp ${w.stamp} (acked at step ${w.ackedAtStep}, flushed ${w.flushed})`,
          };
        }
      }
      const all = sim.dataNodes.filter((n) => n !== p);
      const idle = model.inflight.size === 0 && !sim.net.partitioned;
      if (idle && all.length === inSync.length && st.peers.every((x) => !x.resync)) {
        for (const n of inSync)
          if (!n.disk!.current.equals(p.disk!.current))
            return {
              kind: 'replicas differ while connected and idle',
              detail: `${p.name} vs ${n.name}: ${differing(p, n)}`,
            };
      }
      if (o.converged && all.length !== inSync.length)
        return {
          kind: 'did not converge',
          detail: st.peers
            .map((x) => `${x.node}:${x.connection}/${x.outOfSyncBytes}/${x.lastError}`)
            .join(' '),
        };
    }
  } else if (o.converged) {
    return { kind: 'did not converge', detail: 'no primary after settling' };
  }
  return undefined;
}

/** The blocks where two replicas differ, with the stamps each holds. */
function differing(a: SimNode, b: SimNode): string {
  const out: string[] = [];
  for (let i = 0; i * BLOCK < a.disk!.size; i++) {
    const x = blockOf(a, i);
    const y = blockOf(b, i);
    if (!x.equals(y))
      out.push(`block ${i}: ${stampOf(x)} vs ${stampOf(y)}${stampOf(x) === stampOf(y) ? ' (torn)' : ''}`);
  }
  return out.join(', ');
}
