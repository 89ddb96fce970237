/**
 * restic, as cvserver drives it: the pure part (arguments, tags, reading its --json lines, turning
 * its failures into clear errors) and one runner that spawns it. Debian's restic 0.14.
 */
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { UserError } from '../lib/errors.ts';

export interface Repository {
  /** Any restic repository (path, sftp:, rest:, s3:, ...). */
  repository: string;
  passwordFile: string;
}

/** Every backup is made with this host name, so the next one finds its parent whichever node runs it. */
export const BACKUP_HOST = 'cvserver';

export function tagsFor(vserver: string, volumeUuid: string, volumeSize: number): string[] {
  return [`vserver=${vserver}`, `volume=${volumeUuid}`, `size=${volumeSize}`];
}

/** The value of `key=` among a snapshot's tags. */
export function tagValue(tags: readonly string[] | undefined, key: string): string | undefined {
  return tags?.find((t) => t.startsWith(`${key}=`))?.slice(key.length + 1);
}

export function repoArgs(r: Repository): string[] {
  return ['-r', r.repository, '--password-file', r.passwordFile];
}

/** The password file must be readable and private (mode 600 or stricter): checked before restic runs. */
export function checkPasswordFile(file: string): void {
  let mode: number;
  try {
    mode = statSync(file).mode & 0o777;
  } catch (err) {
    throw new UserError(`backup.password_file ${file}: cannot read it (${(err as Error).message})`);
  }
  if ((mode & 0o077) !== 0)
    throw new UserError(
      `backup.password_file ${file}: mode is ${mode.toString(8)}, expected 600 (run \`chmod 600 ${file}\`)`,
    );
}

/** restic's progress line (`backup --json`, message_type status). */
export interface ResticStatus {
  message_type: 'status';
  percent_done: number;
  total_files?: number;
  files_done?: number;
  total_bytes?: number;
  bytes_done?: number;
  seconds_elapsed?: number;
  seconds_remaining?: number;
}

/** restic's last line of `backup --json`. */
export interface ResticSummary {
  message_type: 'summary';
  files_new: number;
  files_changed: number;
  files_unmodified: number;
  data_added: number;
  total_files_processed: number;
  total_bytes_processed: number;
  total_duration: number;
  snapshot_id: string;
}

export type ResticMessage =
  | ResticStatus
  | ResticSummary
  | { message_type: 'error'; error?: unknown; item?: string };

/** One line of restic's JSON output; undefined for anything else (restic also prints plain lines). */
export function parseResticLine(line: string): ResticMessage | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const m = JSON.parse(line) as { message_type?: unknown };
    return typeof m.message_type === 'string' ? (m as ResticMessage) : undefined;
  } catch {
    return undefined;
  }
}

/** A progress line for people: files, bytes, rate, ETA. */
export function describeStatus(s: ResticStatus, formatSize: (n: number) => string): string {
  const pct = Math.floor((s.percent_done ?? 0) * 100);
  const elapsed = s.seconds_elapsed ?? 0;
  const rate = elapsed > 0 && s.bytes_done ? s.bytes_done / elapsed : 0;
  const parts = [
    `${pct}%`,
    `${s.files_done ?? 0}/${s.total_files ?? '?'} files`,
    `${formatSize(s.bytes_done ?? 0)}/${formatSize(s.total_bytes ?? 0)}`,
    `${formatSize(rate)}/s`,
  ];
  if (s.seconds_remaining !== undefined) parts.push(`ETA ${s.seconds_remaining} s`);
  return parts.join(', ');
}

/** What restic's stderr means, as one clear line naming the repository. */
export function explainFailure(r: Repository, stderr: string, what: string): string {
  const text = stderr.trim();
  if (/wrong password or no key found/.test(text))
    return `backup repository ${r.repository}: wrong password (backup.password_file ${r.passwordFile})`;
  if (/Is there a repository at the following location\?|unable to open config file/.test(text))
    return `backup repository ${r.repository}: no repository there, or it cannot be reached (create one with \`cvserver backup init\`): ${lastLine(text)}`;
  return `${what} failed: ${lastLine(text) || 'restic exited with an error'}`;
}

function lastLine(text: string): string {
  return (
    text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('{'))
      .pop() ?? ''
  );
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * How a vserver's backup runs restic: at the lowest CPU and I/O priority, so the vserver's own work
 * goes first on a shared machine, as backup tools do (bench/backup measures both; on our shared
 * test VM the effect was not consistent: docs/backup.md). `nice` and `ionice` are in every Debian
 * (coreutils, util-linux).
 */
export const BACKGROUND_PRIORITY = ['nice', '-n', '19', 'ionice', '-c', '3'];

/** Runs restic; `onLine` sees each stdout line as it comes (progress); `prefix` runs it through a command (BACKGROUND_PRIORITY). */
export function runRestic(
  r: Repository,
  args: string[],
  onLine?: (line: string) => void,
  env: NodeJS.ProcessEnv = {},
  prefix: readonly string[] = [],
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [cmd, ...rest] = [...prefix, 'restic', ...repoArgs(r), ...args];
    const child = spawn(cmd!, rest, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    let pending = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      stdout += d;
      if (!onLine) return;
      pending += d;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const l of lines) onLine(l);
    });
    child.stderr.on('data', (d: string) => (stderr += d));
    child.on('error', (err) =>
      reject(new UserError(`cannot run restic (${err.message}): install Debian's restic package`)),
    );
    child.on('close', (code) => {
      if (onLine && pending) onLine(pending);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** Runs restic and fails with a clear error when it fails. */
export async function mustRestic(
  r: Repository,
  args: string[],
  what: string,
  onLine?: (line: string) => void,
  prefix: readonly string[] = [],
) {
  const res = await runRestic(r, args, onLine, {}, prefix);
  if (res.code !== 0) throw new UserError(explainFailure(r, res.stderr, what));
  return res;
}
