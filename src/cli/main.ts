import { Command, CommanderError } from 'commander';
import { errorMessage, UserError } from '../lib/errors.ts';

type Register = (program: Command) => void;

/** Each area's commands, loaded only when asked for: a command starts in a fraction of the time. */
const AREAS: Record<string, () => Promise<Register>> = {
  volume: async () => (await import('./volume.ts')).registerVolumeCommands,
  vserver: async () => (await import('./vserver.ts')).registerVserverCommands,
  sim: async () => (await import('./sim.ts')).registerSimCommands,
  lab: async () => (await import('./lab.ts')).registerLabCommands,
  init: async () => (await import('./init.ts')).registerInitCommand,
  token: async () => (await import('./token.ts')).registerTokenCommands,
  agent: async () => (await import('./agent.ts')).registerAgentCommands,
  operator: async () => (await import('./operator.ts')).registerOperatorCommands,
  backup: async () => (await import('./backup.ts')).registerBackupCommands,
};
/** Top-level commands registered by an area under another name. */
const AREA_OF: Record<string, string> = {
  status: 'agent',
  migrate: 'agent',
  apply: 'agent',
  events: 'agent',
  links: 'agent',
  node: 'operator',
  maintenance: 'operator',
};

/**
 * The `cvserver` command: one program, subcommands by area (volume, vserver, sim, ...). With `first`
 * (the subcommand typed), only that area is loaded; help and unknown commands load them all.
 */
export async function buildProgram(first?: string): Promise<Command> {
  const program = new Command('cvserver')
    .description('High-availability cluster for Linux system containers on replicated volumes')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  const area = first ? (AREA_OF[first] ?? first) : undefined;
  const load = area && AREAS[area] ? [AREAS[area]] : Object.values(AREAS);
  for (const register of await Promise.all(load.map((l) => l()))) register(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  try {
    await (await buildProgram(argv[2])).parseAsync(argv);
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

// Guarded so that scripts/warm-compile-cache can import every module without running it.
if (import.meta.main) await main(process.argv);
