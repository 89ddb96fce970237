/**
 * The supervisor's own entry point (`startVserver` spawns it detached as `supervisor-main.ts supervise
 * NAME`; the word stays in the command line, where the agent recognises its supervisors). Loading only
 * the supervisor (not the CLI's vserver commands, nor the container's start and stop until a restart)
 * takes it from ~0.6 to ~0.2 s of CPU here: it loads while the container starts, and its first health
 * check ends a failover or a migration.
 */
import { superviseMain } from './supervisor.ts';

if (import.meta.main) {
  const name = process.argv[3];
  if (process.argv[2] !== 'supervise' || !name) {
    process.stderr.write('usage: supervisor-main.ts supervise NAME\n');
    process.exit(2);
  }
  try {
    await superviseMain(name);
  } catch (err) {
    process.stderr.write(`cvserver supervisor: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(70);
  }
}
