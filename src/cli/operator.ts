/**
 * The operator's day-to-day commands, from any node (through its agent): standby of a node, maintenance
 * of the cluster. Each is a setting stored in etcd with who set it, and an event in the cluster's log.
 */
import type { Command } from 'commander';
import type { ClusterStatus } from '../agent/status.ts';
import { UserError } from '../lib/errors.ts';
import { askAgent, operatorName } from './agent-client.ts';
import { emit } from './output.ts';

export function registerOperatorCommands(program: Command): void {
  const node = program.command('node').description("a node's standby (its vservers move off it)");

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
      await askAgent({ op: 'standby', node: name, on: true, by: operatorName() });
      if (!o.wait)
        return emit(!!o.json, { node: name, standby: true }, () =>
          [
            `${name} is in standby: its vservers move off one at a time`,
            `follow with: cvserver status, cvserver events --follow; undo with: cvserver node unstandby ${name}`,
          ].join('\n'),
        );
      const began = Date.now();
      let last = '';
      // Done when every vserver that ran there runs healthy elsewhere (one being moved has no node
      // for a moment: it is stopped there before it starts on the next).
      let moving: string[] | undefined;
      for (;;) {
        const s = (await askAgent({ op: 'status', brief: true })) as ClusterStatus;
        moving ??= s.vservers.filter((v) => v.node === name).map((v) => v.name);
        const left = s.vservers.filter(
          (v) =>
            moving!.includes(v.name) &&
            v.desired === 'started' &&
            (v.node === name || v.node === null || v.status !== 'healthy'),
        );
        const now = left
          .map((v) => `${v.name} ${v.status}${v.node && v.node !== name ? ` on ${v.node}` : ''}`)
          .join(', ');
        if (!o.json && now !== last)
          process.stderr.write(
            `${((Date.now() - began) / 1000).toFixed(1)}s still to move: ${now || 'nothing'}\n`,
          );
        last = now;
        if (left.length === 0)
          return emit(
            !!o.json,
            { node: name, standby: true, moved: moving, seconds: (Date.now() - began) / 1000 },
            () =>
              `${name} is in standby and runs no vserver${moving!.length ? ` (moved ${moving!.join(', ')} in ${((Date.now() - began) / 1000).toFixed(1)} s)` : ''}`,
          );
        if (Date.now() - began > timeoutS * 1000)
          throw new UserError(
            `still to move after ${o.timeout} s: ${now} (is there a node to move to? see cvserver events); ${name} stays in standby`,
          );
        await new Promise((r) => setTimeout(r, 250));
      }
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
