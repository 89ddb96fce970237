/**
 * Failover times from the cluster's log (pure): for each vserver that ran on a node whose lease the
 * manager saw expire, the time from that event to the manager's "healthy on <another node>". What the
 * dashboard plots and `GET /api/failovers` answers (api.ts's `failovers` op).
 */
import type { EventRecord } from './records.ts';

export interface Failover {
  vserver: string;
  from: string;
  to: string;
  /** When the manager logged the lease's end (ms since the epoch). */
  expiredAt: number;
  /** When it logged the vserver healthy on `to`. */
  healthyAt: number;
  seconds: number;
}

const ASSIGN = /^(\S+): assign to (\S+) with epoch/;
const ON_NODE = /^(\S+): \S+ on (\S+)$/;
const HEALTHY = /^(\S+): healthy on (\S+)$/;
const EXPIRED = /^(\S+): (?:alive|new)(?:, standby)? -> expired/;

/** Oldest first, as the log is; events of other sources are ignored. */
export function failoversFrom(events: readonly Pick<EventRecord, 'at' | 'source' | 'text'>[]): Failover[] {
  const where = new Map<string, string>();
  const pending = new Map<string, { from: string; at: number }>();
  const out: Failover[] = [];
  for (const e of events) {
    if (e.source !== 'manager') continue;
    const expired = EXPIRED.exec(e.text);
    if (expired) {
      const node = expired[1]!;
      for (const [v, n] of where) if (n === node && !pending.has(v)) pending.set(v, { from: node, at: e.at });
      continue;
    }
    const healthy = HEALTHY.exec(e.text);
    if (healthy) {
      const [, v, node] = healthy as unknown as [string, string, string];
      const p = pending.get(v);
      if (p && p.from !== node)
        out.push({
          vserver: v,
          from: p.from,
          to: node,
          expiredAt: p.at,
          healthyAt: e.at,
          seconds: Math.round((e.at - p.at) / 100) / 10,
        });
      // Healthy again where it was (the node came back first): no failover.
      pending.delete(v);
      where.set(v, node);
      continue;
    }
    const assign = ASSIGN.exec(e.text) ?? ON_NODE.exec(e.text);
    if (assign) where.set(assign[1]!, assign[2]!);
  }
  return out;
}
