import type { Command } from 'commander';
import { runFolder } from '../sim/run-folder.ts';
import { emit } from './output.ts';

export function registerSimCommands(program: Command): void {
  const sim = program.command('sim').description('replay cluster manager scenarios in the simulator');
  sim
    .command('run')
    .description('run scenario folders (cluster.yaml, commands) and compare the decision log with log.expect')
    .argument('<folders...>', 'scenario folders, e.g. test/scenarios/node-power-off')
    .option('--update', 'write the log to log.expect instead of comparing (review it before committing)')
    .option('--json', 'machine-readable output')
    .option(
      '--verbose',
      "print each folder's full log with the nodes' decisions (n1: ...), compared without them",
    )
    .action((folders: string[], opts: { update?: boolean; json?: boolean; verbose?: boolean }) => {
      const results = folders.map((f) => runFolder(f.replace(/\/$/, ''), opts.update, opts.verbose));
      emit(!!opts.json, results, () =>
        results
          .map((r) => {
            const head = `${r.ok ? 'ok  ' : 'FAIL'} ${r.folder}${r.updated ? ' (log.expect updated)' : ''}`;
            const detail = r.ok ? [] : [...r.violations.map((v) => `  invariant: ${v}`), ...r.diff];
            return [head, ...(opts.verbose ? r.trace : []), ...detail].join('\n');
          })
          .join('\n'),
      );
      if (results.some((r) => !r.ok)) process.exitCode = 1;
    });
}
