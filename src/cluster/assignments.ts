/**
 * The assignment table: where each vserver must run, as the manager's commands leave it in the store.
 * Nodes read it (they never receive commands directly), so a node that was unreachable simply acts on
 * the table it last read.
 */
import type { Command } from './types.ts';

export interface Assignment {
  node: string;
  /** The fencing token of this assignment (the volume refuses writes from a lower one). */
  epoch: number;
  /** Restarts in place requested for this epoch: a higher count tells the node to restart. */
  restarts: number;
}

/** vserver -> where it must run. */
export type AssignmentTable = Record<string, Assignment>;

/** The table after `commands`, in order. Pure: `table` is not modified. */
export function applyCommands(table: AssignmentTable, commands: Command[]): AssignmentTable {
  const out: AssignmentTable = { ...table };
  for (const c of commands) {
    if (c.kind === 'assign') out[c.vserver] = { node: c.node, epoch: c.epoch, restarts: 0 };
    else if (c.kind === 'restart') {
      const a = out[c.vserver];
      // A restart only makes sense for the assignment it was decided for.
      if (a && a.node === c.node && a.epoch === c.epoch) out[c.vserver] = { ...a, restarts: a.restarts + 1 };
    } else if (c.kind === 'stop') {
      // A stop for a node that no longer holds the assignment (a stray copy) leaves the table alone.
      if (out[c.vserver]?.node === c.node) delete out[c.vserver];
    }
  }
  return out;
}
