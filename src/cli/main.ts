import { Command, CommanderError } from 'commander';
import { errorMessage, UserError } from '../lib/errors.ts';
import { registerAgentCommands } from './agent.ts';
import { registerInitCommand } from './init.ts';
import { registerLabCommands } from './lab.ts';
import { registerSimCommands } from './sim.ts';
import { registerVolumeCommands } from './volume.ts';
import { registerVserverCommands } from './vserver.ts';

/** The `cvserver` command: one program, subcommands by area (volume, vserver, sim, ...). */
export function buildProgram(): Command {
  const program = new Command('cvserver')
    .description('High-availability cluster for Linux system containers on replicated volumes')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerVolumeCommands(program);
  registerVserverCommands(program);
  registerSimCommands(program);
  registerLabCommands(program);
  registerInitCommand(program);
  registerAgentCommands(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed the message (or the help/version text).
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof UserError) {
      process.stderr.write(`cvserver: ${err.message}\n`);
      process.exitCode = err.exitCode;
      return;
    }
    process.stderr.write(`cvserver: internal error: ${errorMessage(err)}\n`);
    if (process.env.CVSERVER_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = 70;
  }
}

await main(process.argv);
