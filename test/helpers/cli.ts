import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `cvserver` command with its own state directory. */
export function cli(stateDir: string, args: string[]): CliResult {
  const r = spawnSync(join(ROOT, 'bin', 'cvserver'), args, {
    env: { ...process.env, CVSERVER_STATE_DIR: stateDir },
    encoding: 'utf8',
    timeout: 300_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `cvs-${prefix}-`));
}
