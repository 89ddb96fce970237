/**
 * The operator's day-to-day commands, from any node (through its agent): standby of a node, maintenance
 * of the cluster. Each is a setting stored in etcd with who set it, and an event in the cluster's log.
 */
import type { Command } from 'commander';
import { UserError } from '../lib/errors.ts';
import { askAgent, operatorName } from './agent-client.ts';
import { registerMembershipCommands } from './node-membership.ts';
import { emit } from './output.ts';
import { vserversOn, waitMovedOff } from './wait-moved.ts';

export function registerOperatorCommands(program: Command): void {
  const node = program
    .command('node')
    .description(
      "a node's standby (its vservers move off it), and nodes added to or removed from the cluster",
    );
  registerMembershipCommands(node);

  node
    .command('standby <node>')
    .description(
      'put a node in standby: its vservers move off one at a time, in order (planned moves, no acknowledged write lost)',
    )
    .option('--wait', 'return once no vserver runs on the node any more (with progress)')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '600')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { wait?: boolean; timeout: string; json?: boolean }) => {
      const timeoutS = Number(o.timeout);
      if (!(timeoutS > 0))
        throw new UserError(`--timeout: expected a positive number of seconds, got "${o.timeout}"`);
      const moving = o.wait ? await vserversOn(name) : [];
      await askAgent({ op: 'standby', node: name, on: true, by: operatorName() });
      if (!o.wait)
        return emit(!!o.json, { node: name, standby: true }, () =>
          [
            `${name} is in standby: its vservers move off one at a time`,
            `follow with: cvserver status, cvserver events --follow; undo with: cvserver node unstandby ${name}`,
          ].join('\n'),
        );
      const { moved, seconds } = await waitMovedOff(name, moving, timeoutS, !!o.json);
      return emit(
        !!o.json,
        { node: name, standby: true, moved, seconds },
        () =>
          `${name} is in standby and runs no vserver${moved.length ? ` (moved ${moved.join(', ')} in ${seconds.toFixed(1)} s)` : ''}`,
      );
    });

  node
    .command('unstandby <node>')
    .description(
      'end the standby of a node: it may run vservers again (they move back only with failback on)',
    )
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      await askAgent({ op: 'standby', node: name, on: false, by: operatorName() });
      emit(!!o.json, { node: name, standby: false }, () => `${name} is no longer in standby`);
    });

  program
    .command('maintenance <on|off>')
    .description(
      'maintenance of the cluster: while on, the manager observes and decides nothing (no failover, no restart); ' +
        'nodes keep running what runs, and still fence themselves on lease loss (safety is never paused)',
    )
    .option('--json', 'machine-readable output')
    .action(async (state: string, o: { json?: boolean }) => {
      if (state !== 'on' && state !== 'off')
        throw new UserError(`maintenance: expected on or off, got "${state}"`);
      const on = state === 'on';
      await askAgent({ op: 'maintenance', on, by: operatorName() });
      emit(!!o.json, { maintenance: on }, () =>
        on
          ? 'maintenance on: the manager decides nothing until `cvserver maintenance off`; self-fencing stays on'
          : 'maintenance off: the manager decides again',
      );
    });
}
