/**
 * The independent guard: a small process per state dir, detached from the agent, that fences the
 * node when the agent hangs. The agent sends it, every loop, a deadline on CLOCK_MONOTONIC (the same
 * clock in every process) and what it runs; when the deadline passes without a newer message, the
 * guard SIGKILLs those containers' processes and those volumes' daemons (the loop device then
 * returns EIO: nothing more is acknowledged). It depends on nothing but its own timer.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server, Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { type Clock, monotonicClock, type TimerHandle } from '../lib/clock.ts';
import { errnoCode, UserError } from '../lib/errors.ts';
import { cgroupsPath } from '../vserver/store.ts';
import { cgroupPids, cmdlineOf, readPid, volumeDaemonPid } from './resources/processes.ts';

export const guardMessageSchema = z.strictObject({
  deadline: z.number().finite(),
  protect: z.strictObject({ containers: z.array(z.string()), volumes: z.array(z.string()) }),
});
export type GuardMessage = z.infer<typeof guardMessageSchema>;
export type Protected = GuardMessage['protect'];

export interface GuardState {
  /** The latest deadline (ms, monotonic), or null before the first message. */
  deadline: number | null;
  protect: Protected;
  /** The guard fenced at the deadline and protects nothing until a new message. */
  fenced: boolean;
}

export interface GuardKill extends Protected {
  deadline: number;
  /** How long after the deadline the guard acted. */
  lateMs: number;
}

export function initialGuardState(): GuardState {
  return { deadline: null, protect: { containers: [], volumes: [] }, fenced: false };
}

/** The latest message wins: a closed connection or a silent agent does not move the deadline. */
export function guardReceive(_state: GuardState, msg: GuardMessage): GuardState {
  return {
    deadline: msg.deadline,
    protect: { containers: [...msg.protect.containers], volumes: [...msg.protect.volumes] },
    fenced: false,
  };
}

/** At or after the deadline, with something protected: kill it all, once, and protect nothing more. */
export function guardDecision(state: GuardState, now: number): { kill: GuardKill | null; state: GuardState } {
  const { deadline, protect } = state;
  if (deadline === null || now < deadline) return { kill: null, state };
  if (protect.containers.length === 0 && protect.volumes.length === 0) return { kill: null, state };
  return {
    kill: { ...protect, deadline, lateMs: now - deadline },
    state: { deadline, protect: { containers: [], volumes: [] }, fenced: true },
  };
}

export interface GuardPaths {
  pidFile: string;
  socket: string;
  log: string;
  stderr: string;
}

export function guardPaths(stateDir: string): GuardPaths {
  const run = join(stateDir, 'run');
  return {
    pidFile: join(run, 'guard.pid'),
    socket: join(run, 'guard.sock'),
    log: join(run, 'guard.log'),
    stderr: join(run, 'guard.stderr'),
  };
}

/** The live guard of this state dir, if any (its pid file, checked by its command line). */
export function liveGuardPid(stateDir: string): number | undefined {
  const pid = readPid(guardPaths(stateDir).pidFile);
  if (pid === undefined || pid === process.pid) return pid === process.pid ? pid : undefined;
  return cmdlineOf(pid)?.includes('guard') ? pid : undefined;
}

const GUARD_MAIN = fileURLToPath(new URL('./guard-main.ts', import.meta.url));

/**
 * Starts the guard of `stateDir` detached (it outlives the caller) unless one lives; returns its pid
 * once it listens.
 */
export async function spawnGuard(stateDir: string, timeoutMs = 10_000): Promise<number> {
  const live = liveGuardPid(stateDir);
  if (live !== undefined) return live;
  const p = guardPaths(stateDir);
  mkdirSync(join(stateDir, 'run'), { recursive: true });
  const err = openSync(p.stderr, 'a');
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', GUARD_MAIN, stateDir], {
    detached: true,
    stdio: ['ignore', err, err],
    env: { ...process.env, CVSERVER_STATE_DIR: stateDir },
  });
  closeSync(err);
  let exited: number | null = null;
  child.on('exit', (code) => (exited = code ?? -1));
  child.unref();
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (exited !== null) break;
    if (child.pid && liveGuardPid(stateDir) === child.pid && (await canConnect(p.socket))) return child.pid;
    await new Promise((r) => setTimeout(r, 20));
  }
  if (exited === null && child.pid) process.kill(child.pid, 'SIGKILL');
  const tail = readTail(p.stderr);
  throw new Error(`guard for ${stateDir} did not start${tail ? `: ${tail}` : ''}`);
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.connect(path);
  });
}

function readTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-2).join(' | ');
  } catch {
    return '';
  }
}

/**
 * The agent's side: sends the latest message, connecting (again) when needed. Never throws; a
 * message that cannot be sent is simply not news to the guard (its last deadline stands).
 */
export class GuardClient {
  readonly path: string;
  #socket: Socket | undefined;
  #connected = false;
  #pending: GuardMessage | undefined;

  constructor(stateDir: string) {
    this.path = guardPaths(stateDir).socket;
  }

  /** True when the message was written to a connected socket now. */
  send(msg: GuardMessage): boolean {
    if (this.#socket && this.#connected) {
      this.#socket.write(`${JSON.stringify(msg)}\n`);
      return true;
    }
    this.#pending = msg;
    if (!this.#socket) this.#connect();
    return false;
  }

  close(): void {
    this.#socket?.destroy();
    this.#socket = undefined;
    this.#connected = false;
  }

  #connect(): void {
    const s = new Socket();
    this.#socket = s;
    s.on('connect', () => {
      this.#connected = true;
      if (this.#pending) s.write(`${JSON.stringify(this.#pending)}\n`);
      this.#pending = undefined;
    });
    const drop = () => {
      if (this.#socket === s) {
        this.#socket = undefined;
        this.#connected = false;
      }
    };
    s.on('error', drop);
    s.on('close', drop);
    s.unref();
    s.connect(this.path);
  }
}

/** What the guard killed: pids per container (its cgroup and its init), the daemon per volume. */
export interface FenceReport {
  containers: Array<{ name: string; pids: number[] }>;
  volumes: Array<{ name: string; pid: number | null }>;
}

/** SIGKILL, now: the volume daemons first (no write acknowledged from here on), then the containers. */
export function fence(stateDir: string, kill: Protected, cgroupOf: (name: string) => string): FenceReport {
  const volumes = kill.volumes.map((name) => {
    const pid = volumeDaemonPid(join(stateDir, 'volumes', name)) ?? null;
    if (pid) killQuietly(pid);
    return { name, pid };
  });
  const containers = kill.containers.map((name) => {
    const pids = new Set<number>();
    // A process forking while we kill: a few rounds over the cgroup.
    for (let round = 0; round < 3; round++) {
      const found = cgroupPids(cgroupOf(name));
      for (const pid of found) {
        pids.add(pid);
        killQuietly(pid);
      }
      if (found.length === 0) break;
    }
    const init = crunPid(stateDir, name);
    if (init) {
      pids.add(init);
      killQuietly(init);
    }
    return { name, pids: [...pids].sort((a, b) => a - b) };
  });
  return { containers, volumes };
}

function crunPid(stateDir: string, name: string): number | undefined {
  const r = spawnSync('crun', ['--root', join(stateDir, 'crun'), 'state', name], {
    encoding: 'utf8',
    timeout: 1000,
  });
  if (r.status !== 0) return undefined;
  try {
    const s = JSON.parse(r.stdout) as { status?: string; pid?: number };
    return s.status === 'running' || s.status === 'paused' || s.status === 'created' ? s.pid : undefined;
  } catch {
    return undefined;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {}
}

/** Takes the pid file, refusing while another guard of this state dir lives. */
function takePidFile(file: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o644);
      writeFileSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      const pid = readPid(file);
      if (pid !== undefined && pid !== process.pid && cmdlineOf(pid)?.includes('guard'))
        throw new UserError(`a guard already runs for this state dir (pid ${pid}, ${file})`);
      rmSync(file, { force: true });
    }
  }
  throw new UserError(`cannot take ${file}`);
}

/**
 * The guard process: listens, keeps the latest message, fences at the deadline. Runs until SIGTERM.
 * `clock` reads the agent's clock for deadlines, CLOCK_MONOTONIC (a simulated one in tests).
 */
export async function runGuard(o: { stateDir: string; clock?: Clock }): Promise<void> {
  const clock = o.clock ?? monotonicClock;
  // The containers' cgroup names derive from the state dir (see cgroupsPath).
  process.env.CVSERVER_STATE_DIR = o.stateDir;
  const p = guardPaths(o.stateDir);
  mkdirSync(join(o.stateDir, 'run'), { recursive: true });
  takePidFile(p.pidFile);
  const logLine = (entry: Record<string, unknown>) =>
    appendFileSync(
      p.log,
      `${JSON.stringify({ time: new Date().toISOString(), pid: process.pid, ...entry })}\n`,
    );
  let state = initialGuardState();

  // One timer, set for the deadline itself (libuv timers run on the monotonic clock): no polling while
  // idle, and the check comes when it is due. Re-armed after every message and every check.
  let timer: TimerHandle | undefined;
  const arm = () => {
    timer?.cancel();
    if (state.fenced || state.deadline === null) return;
    timer = clock.setTimer(check, Math.max(0, state.deadline - clock.now()));
  };
  const check = () => {
    const now = clock.now();
    const d = guardDecision(state, now);
    state = d.state;
    arm();
    if (!d.kill) return;
    const report = fence(o.stateDir, d.kill, cgroupsPath);
    logLine({
      event: 'fenced',
      reason: 'deadline passed without a newer message from the agent',
      deadline: d.kill.deadline,
      now,
      lateMs: d.kill.lateMs,
      ...report,
    });
  };

  const server: Server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 1024 * 1024) {
        logLine({ event: 'bad-message', error: 'line too long' });
        sock.destroy();
        return;
      }
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        if (!line) continue;
        let parsed: unknown;
        try {
          parsed = JSON.parse(line);
        } catch {
          logLine({ event: 'bad-message', error: 'not JSON' });
          continue;
        }
        const m = guardMessageSchema.safeParse(parsed);
        if (!m.success) {
          logLine({ event: 'bad-message', error: m.error.issues[0]?.message ?? 'invalid' });
          continue;
        }
        const wasFenced = state.fenced;
        state = guardReceive(state, m.data);
        if (wasFenced) logLine({ event: 'armed', deadline: state.deadline, protect: state.protect });
      }
      check();
    });
    // A connection closing is no reason to fence early: the last deadline stands.
    sock.on('error', () => undefined);
  });

  rmSync(p.socket, { force: true });
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p.socket, () => resolve());
    });
  } finally {
    process.umask(umask);
  }
  chmodSync(p.socket, 0o600);
  arm();
  logLine({ event: 'started', socket: p.socket });

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      timer?.cancel();
      server.close();
      logLine({ event: 'stopped', signal, protecting: state.protect, deadline: state.deadline });
      if (readPid(p.pidFile) === process.pid) {
        rmSync(p.pidFile, { force: true });
        rmSync(p.socket, { force: true });
      }
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
