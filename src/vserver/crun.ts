import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The OCI runtime as cvserver uses it: a small interface so the manager can be tested without crun. */
export interface ContainerState {
  status: 'created' | 'running' | 'stopped' | 'paused' | 'absent';
  pid?: number;
}

export interface Runtime {
  create(id: string, bundle: string, consoleFd: number): void;
  start(id: string): void;
  state(id: string): ContainerState;
  kill(id: string, signal: number): void;
  delete(id: string): void;
}

export class CrunError extends Error {}

/** The longest a crun call may take (`crun create` of a large container included). */
const CRUN_TIMEOUT_MS = 30_000;

/** crun with its own state root, so each state dir (and each test) has its own set of containers. */
export function crunRuntime(root: string): Runtime {
  const run = (args: string[], stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe']) => {
    // Bounded: a container stuck in the kernel (a dead FUSE daemon under its root) must not hang
    // the caller forever; the agent stops containers on its main thread.
    const r = spawnSync('crun', ['--root', root, ...args], {
      stdio,
      encoding: 'utf8',
      timeout: CRUN_TIMEOUT_MS,
    });
    if (r.error) throw new CrunError(`crun ${args[0]}: ${r.error.message}`);
    return { code: r.status ?? 1, out: r.stdout ?? '', err: (r.stderr ?? '').trim() };
  };
  const must = (args: string[], stdio?: ('ignore' | 'pipe' | number)[]) => {
    const r = run(args, stdio);
    if (r.code !== 0) throw new CrunError(`crun ${args.join(' ')}: ${r.err || `exit ${r.code}`}`);
    return r.out;
  };
  return {
    // The container's stdout/stderr are the console log file; crun create returns once it is set up.
    create: (id, bundle, fd) => {
      must(['create', '--bundle', bundle, id], ['ignore', fd, fd]);
    },
    start: (id) => {
      must(['start', id]);
    },
    state: (id) => {
      const r = run(['state', id]);
      if (r.code !== 0) return { status: 'absent' };
      const s = JSON.parse(r.out) as { status: ContainerState['status']; pid?: number };
      return { status: s.status, pid: s.pid };
    },
    kill: (id, signal) => {
      const r = run(['kill', id, String(signal)]);
      if (r.code !== 0 && !/not running|does not exist|No such process/i.test(r.err)) {
        throw new CrunError(`crun kill ${id}: ${r.err}`);
      }
    },
    delete: (id) => {
      run(['delete', '--force', id]);
    },
  };
}

/** Arguments for `crun exec`, for callers that spawn it with their own stdio. */
export function crunExecArgs(root: string, id: string, command: string[], tty: boolean): string[] {
  return ['--root', root, 'exec', ...(tty ? ['--tty'] : []), id, ...command];
}

/**
 * Whether crun's container `id` runs, from crun's own status file and /proc, without spawning crun
 * (the agent asks several times a second). Undefined when that cannot tell (no file, another format):
 * ask `crun state` then. A pid counts only with the start time crun recorded (no pid reuse) and not a zombie.
 */
export function runningFromStatusFile(root: string, id: string): boolean | undefined {
  let status: { pid?: unknown; 'process-start-time'?: unknown };
  try {
    status = JSON.parse(readFileSync(join(root, id, 'status'), 'utf8')) as typeof status;
  } catch {
    return undefined;
  }
  const pid = status.pid;
  const start = status['process-start-time'];
  if (typeof pid !== 'number' || typeof start !== 'number') return undefined;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // Fields after the command name (which may hold spaces): state is field 3, starttime field 22.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[0] !== 'Z' && fields[0] !== 'X' && Number(fields[19]) === start;
}
