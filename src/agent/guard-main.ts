/** The guard process of one state dir (see guard.ts); `spawnGuard` starts it detached. */
import { resolve } from 'node:path';
import { UserError } from '../lib/errors.ts';
import { runGuard } from './guard.ts';

if (import.meta.main) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: guard-main.ts STATE_DIR\n');
    process.exit(2);
  }
  try {
    await runGuard({ stateDir: resolve(dir) });
  } catch (err) {
    process.stderr.write(`cvserver guard: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(err instanceof UserError ? err.exitCode : 70);
  }
}
