import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The OCI runtime as cvserver uses it: a small interface so the manager can be tested without crun. */
export interface ContainerState {
  status: 'created' | 'running' | 'stopped' | 'paused' | 'absent';
  pid?: number;
}

/**
 * Asynchronous on purpose: the agent stops containers on its main thread, which also renews the
 * node's lease; a blocking crun call there (hundreds of ms each on a loaded host) cost renewals and
 * got a node fenced in the middle of a planned move.
 */
export interface Runtime {
  create(id: string, bundle: string, consoleFd: number): Promise<void>;
  start(id: string): Promise<void>;
  state(id: string): Promise<ContainerState>;
  kill(id: string, signal: number): Promise<void>;
  delete(id: string): Promise<void>;
}

export class CrunError extends Error {}

/** The longest a crun call may take (`crun create` of a large container included). */
const CRUN_TIMEOUT_MS = 30_000;

interface CrunResult {
  code: number;
  out: string;
  err: string;
}

/** Runs crun; stdout and stderr are collected unless `outputFd` takes both (crun create's console). */
function runCrun(root: string, args: string[], outputFd?: number): Promise<CrunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('crun', ['--root', root, ...args], {
      stdio: outputFd === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', outputFd, outputFd],
    });
    let out = '';
    let err = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
    // Bounded: a container stuck in the kernel (a dead FUSE daemon under its root) must not hang
    // the caller forever.
    const timer = setTimeout(() => child.kill('SIGKILL'), CRUN_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CrunError(`crun ${args[0]}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal === 'SIGKILL' && code === null)
        reject(new CrunError(`crun ${args[0]}: no answer within ${CRUN_TIMEOUT_MS / 1000} s`));
      else resolve({ code: code ?? 1, out, err: err.trim() });
    });
  });
}

/** crun with its own state root, so each state dir (and each test) has its own set of containers. */
export function crunRuntime(root: string): Runtime {
  const must = async (args: string[], outputFd?: number): Promise<string> => {
    const r = await runCrun(root, args, outputFd);
    if (r.code !== 0) throw new CrunError(`crun ${args.join(' ')}: ${r.err || `exit ${r.code}`}`);
    return r.out;
  };
  return {
    // The container's stdout/stderr are the console log file; crun create returns once it is set up.
    create: async (id, bundle, fd) => {
      await must(['create', '--bundle', bundle, id], fd);
    },
    start: async (id) => {
      await must(['start', id]);
    },
    state: async (id) => {
      const r = await runCrun(root, ['state', id]);
      if (r.code !== 0) return { status: 'absent' };
      const s = JSON.parse(r.out) as { status: ContainerState['status']; pid?: number };
      return { status: s.status, pid: s.pid };
    },
    kill: async (id, signal) => {
      const r = await runCrun(root, ['kill', id, String(signal)]);
      if (r.code !== 0 && !/not running|does not exist|No such process/i.test(r.err)) {
        throw new CrunError(`crun kill ${id}: ${r.err}`);
      }
    },
    delete: async (id) => {
      await runCrun(root, ['delete', '--force', id]);
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
  const s = statusFile(root, id);
  return s && livePid(s.pid, s.start);
}

/** The pid of the container's init from crun's status file when it lives (as above), else undefined. */
export function pidFromStatusFile(root: string, id: string): number | undefined {
  const s = statusFile(root, id);
  return s && livePid(s.pid, s.start) ? s.pid : undefined;
}

function statusFile(root: string, id: string): { pid: number; start: number } | undefined {
  let status: { pid?: unknown; 'process-start-time'?: unknown };
  try {
    status = JSON.parse(readFileSync(join(root, id, 'status'), 'utf8')) as typeof status;
  } catch {
    return undefined;
  }
  const pid = status.pid;
  const start = status['process-start-time'];
  return typeof pid === 'number' && typeof start === 'number' ? { pid, start } : undefined;
}

function livePid(pid: number, start: number): boolean {
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

/**
 * The container's status from crun's files when they tell (no process spawned), else from `crun state`.
 * A live init still waiting on crun's exec fifo is created, not running yet; no state dir, no container.
 */
export async function quickStatus(rt: Runtime, root: string, id: string): Promise<ContainerState['status']> {
  const fast = runningFromStatusFile(root, id);
  if (fast === true) return existsSync(join(root, id, 'exec.fifo')) ? 'created' : 'running';
  if (fast === undefined && !existsSync(join(root, id))) return 'absent';
  return (await rt.state(id)).status;
}

/**
 * Signals the container's init directly when crun's status file names a live one (no crun spawned:
 * a stop is on a migration's path), else through `crun kill`. Like `crun kill` without --all.
 */
export async function signalInit(rt: Runtime, root: string, id: string, signal: number): Promise<void> {
  const pid = pidFromStatusFile(root, id);
  if (pid === undefined) return rt.kill(id, signal);
  try {
    process.kill(pid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
