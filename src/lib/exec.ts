import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a program (no shell) and returns its output; throws an Error with its stderr when it fails. */
export async function run(
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number } = {},
): Promise<RunResult> {
  try {
    const { stdout, stderr } = await execFileAsync(cmd, args, {
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 64 * 1024 * 1024,
      encoding: 'utf8',
    });
    return { stdout, stderr };
  } catch (err) {
    const e = err as { stderr?: string; code?: number | string; message: string };
    const detail = e.stderr?.trim() || e.message;
    throw new Error(`${cmd} ${args.join(' ')}: ${detail}`);
  }
}

/** Like `run`, but returns null instead of throwing when the program exits non-zero. */
export async function tryRun(cmd: string, args: readonly string[]): Promise<RunResult | null> {
  try {
    return await run(cmd, args);
  } catch {
    return null;
  }
}
