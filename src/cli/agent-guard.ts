import { resolve } from 'node:path';
import type { Command } from 'commander';
import { runGuard } from '../agent/guard.ts';
import { stateDir } from '../lib/paths.ts';

/** `cvserver agent guard`: the independent fence of one state dir (the agent starts it detached). */
export function registerGuardCommand(agent: Command): void {
  agent
    .command('guard')
    .description(
      "the independent guard: kills this node's protected containers and volume daemons when the agent's deadline passes (run by the agent)",
    )
    .option('--state-dir <dir>', 'the state dir to guard (default: CVSERVER_STATE_DIR or /var/lib/cvserver)')
    .action(async (o: { stateDir?: string }) => {
      await runGuard({ stateDir: resolve(o.stateDir ?? stateDir()) });
    });
}
