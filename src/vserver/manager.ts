import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage, UserError } from '../lib/errors.ts';
import { stateDir } from '../lib/paths.ts';
import { type Phases, phases } from '../lib/phases.ts';
import {
  type ContainerState,
  crunRuntime,
  pidFromStatusFile,
  quickStatus,
  type Runtime,
  runningFromStatusFile,
  signalInit,
} from './crun.ts';
import { stopSignal, type VserverDefinition } from './definition.ts';
import { attachNetwork, detachNetwork, hostInterfaceName } from './network.ts';
import { buildOciConfig, signalNumber } from './oci-config.ts';
import { nextStopStep } from './stop-sequence.ts';
import {
  cgroupsPath,
  crunRoot,
  listNames,
  readDefinition,
  readRuntime,
  recordEvent,
  templateCacheDir,
  updateRuntime,
  vserverPaths,
  writeJsonAtomic,
} from './store.ts';
import { createBusyboxRootfs, createDebianRootfs, importRootfsTarball } from './templates.ts';

export function runtime(): Runtime {
  mkdirSync(crunRoot(), { recursive: true });
  return crunRuntime(crunRoot());
}

export type RootfsSource = { template: 'busybox' | 'debian' } | { importTarball: string } | undefined;

/** Validates everything first, then creates the vserver's files (and its rootfs from a template). */
export function createVserver(def: VserverDefinition, source: RootfsSource): void {
  const p = vserverPaths(def.name);
  if (existsSync(p.definition)) throw new UserError(`name: a vserver named "${def.name}" already exists`);
  if (!source && !(existsSync(def.rootfs) && statSync(def.rootfs).isDirectory())) {
    throw new UserError(
      `rootfs: ${def.rootfs} does not exist or is not a directory (give --template or --import to create it)`,
    );
  }
  if (source && existsSync(def.rootfs) && statSync(def.rootfs).isDirectory() && readdirNonEmpty(def.rootfs)) {
    throw new UserError(
      `rootfs: ${def.rootfs} is not empty; a template or import needs an empty or missing directory`,
    );
  }
  if (source) {
    mkdirSync(def.rootfs, { recursive: true });
    if ('template' in source) {
      if (source.template === 'busybox') createBusyboxRootfs(def.rootfs);
      else createDebianRootfs(def.rootfs, templateCacheDir());
    } else {
      importRootfsTarball(def.rootfs, source.importTarball);
    }
  }
  mkdirSync(p.bundle, { recursive: true });
  writeJsonAtomic(p.definition, def);
  writeJsonAtomic(p.config, buildOciConfig(def, { cgroupsPath: cgroupsPath(def.name) }));
  writeJsonAtomic(p.runtime, { desired: 'stopped', restarts: [] });
  recordEvent(
    def.name,
    'created',
    source
      ? `rootfs from ${'template' in source ? `template ${source.template}` : source.importTarball}`
      : `rootfs ${def.rootfs}`,
  );
}

function readdirNonEmpty(dir: string): boolean {
  return readdirSync(dir).length > 0;
}

export function mustDefinition(name: string): VserverDefinition {
  const def = readDefinition(name);
  if (!def) throw new UserError(`no vserver named "${name}"`);
  return def;
}

export function containerState(name: string): Promise<ContainerState> {
  return runtime().state(name);
}

/** crun create → network → crun start. The container outlives this process. `took`: its steps' times. */
export async function startContainer(
  def: VserverDefinition,
  reason: string,
  took: Phases = phases(),
): Promise<void> {
  const rt = runtime();
  const p = vserverPaths(def.name);
  // No state dir in crun's root: no container, and no `crun state` spawned to learn it.
  const st: ContainerState = existsSync(join(crunRoot(), def.name))
    ? await rt.state(def.name)
    : { status: 'absent' };
  if (st.status === 'running') return;
  if (st.status !== 'absent') await rt.delete(def.name);
  if (!existsSync(def.rootfs)) throw new UserError(`rootfs: ${def.rootfs} does not exist`);
  // Rewritten on each start so a changed code version's config applies.
  writeJsonAtomic(p.config, buildOciConfig(def, { cgroupsPath: cgroupsPath(def.name) }));
  const fd = openSync(p.console, 'a');
  const before = statSync(p.console).size;
  took.mark('prepare');
  try {
    await rt.create(def.name, p.bundle, fd);
  } catch (e) {
    // crun reports its errors on the container's stderr, which is the console log.
    const tail = readFileSync(p.console).subarray(before).toString().trim().split('\n').slice(-2).join(' / ');
    throw new UserError(`vserver ${def.name}: crun create failed: ${tail || errorMessage(e)}`);
  } finally {
    closeSync(fd);
  }
  took.mark('create');
  try {
    // The init's pid from crun's status file: no `crun state` spawned on a failover's path.
    const pid = pidFromStatusFile(crunRoot(), def.name) ?? (await rt.state(def.name)).pid;
    if (def.network && pid) attachNetwork(def.network, hostInterfaceName(stateDir(), def.name), pid);
    took.mark('network');
    await rt.start(def.name);
    took.mark('start');
  } catch (e) {
    await rt.delete(def.name);
    throw e;
  }
  recordEvent(def.name, 'started', reason);
}

/**
 * Stop signal, wait up to the stop timeout, SIGKILL, delete; returns how it ended. `took`: its steps'
 * times. `alongside`: work that needs only the container's processes gone (its volume's release), run
 * while crun deletes the container and its veth goes, not after.
 */
export async function stopContainer(
  def: VserverDefinition,
  reason: string,
  took: Phases = phases(),
  alongside?: () => Promise<void>,
): Promise<'stopped' | 'killed' | 'not-running'> {
  const rt = runtime();
  const began = Date.now();
  let signalled = false;
  let killed = false;
  // From crun's files when they tell: a stop is on a migration's path, and a spawn costs there.
  let first: ContainerState | undefined = { status: await quickStatus(rt, crunRoot(), def.name) };
  took.mark('state');
  if (first.status === 'absent') {
    await alongside?.();
    return 'not-running';
  }
  for (;;) {
    // Once signalled, crun's status file and /proc answer without spawning crun every 50 ms.
    const fast = signalled ? runningFromStatusFile(crunRoot(), def.name) : undefined;
    const st: ContainerState =
      first ?? (fast === undefined ? await rt.state(def.name) : { status: fast ? 'running' : 'stopped' });
    first = undefined;
    const running = st.status === 'running' || st.status === 'created' || st.status === 'paused';
    const step = nextStopStep({
      signalled,
      killed,
      running,
      elapsedMs: Date.now() - began,
      timeoutMs: def.stop.timeout,
    });
    if (step.action === 'done') break;
    if (step.action === 'signal') {
      await signalInit(rt, crunRoot(), def.name, st.status === 'created' ? 9 : signalNumber(stopSignal(def)));
      signalled = true;
      took.mark('signal');
    } else if (step.action === 'kill') {
      await signalInit(rt, crunRoot(), def.name, 9);
      killed = true;
    } else if (step.action === 'fail') {
      throw new Error(`vserver ${def.name}: ${step.reason}`);
    } else {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  took.mark('exit');
  // Its init gone, so is every process of its pid namespace, and with them its mounts.
  const remove = async () => {
    await rt.delete(def.name);
    if (def.network) await detachNetwork(def.network, hostInterfaceName(stateDir(), def.name));
  };
  // Both finish before the stop does (a failed one fails it: a stop is tried again, never overlapped).
  const done = await Promise.allSettled([remove(), alongside?.()]);
  for (const d of done) if (d.status === 'rejected') throw d.reason;
  took.mark(alongside ? 'delete+release' : 'delete');
  recordEvent(
    def.name,
    'stopped',
    `${reason}${killed ? ` (killed after ${def.stop.timeout}ms stop timeout)` : ''}`,
  );
  return killed ? 'killed' : 'stopped';
}

/** Starts the vserver and its supervisor (health checks, restart policy, OOM events). */
export async function startVserver(name: string, took: Phases = phases()): Promise<void> {
  const def = mustDefinition(name);
  updateRuntime(name, (r) => ({ ...r, desired: 'running' }));
  // The supervisor first: it loads while the container starts (it waits for the container), so the
  // first health check comes sooner.
  spawnSupervisor(name);
  took.mark('supervisor');
  try {
    await startContainer(def, 'start requested', took);
  } catch (e) {
    // As before the supervisor went first: a start that failed leaves no supervisor behind.
    const pid = readRuntime(name).supervisorPid;
    if (pid && isAlive(pid)) process.kill(pid, 'SIGTERM');
    updateRuntime(name, (r) => ({ ...r, supervisorPid: undefined }));
    throw e;
  }
}

export async function stopVserver(name: string, reason = 'stop requested'): Promise<string> {
  const def = mustDefinition(name);
  const rec = updateRuntime(name, (r) => ({ ...r, desired: 'stopped' }));
  if (rec.supervisorPid && isAlive(rec.supervisorPid)) {
    try {
      process.kill(rec.supervisorPid, 'SIGTERM');
    } catch {}
  }
  updateRuntime(name, (r) => ({ ...r, supervisorPid: undefined }));
  const how = await stopContainer(def, reason);
  removeEmptyCgroupParents(name);
  return how;
}

export async function destroyVserver(name: string, removeRootfs: boolean): Promise<void> {
  const def = mustDefinition(name);
  await stopVserver(name, 'destroy requested');
  if (removeRootfs) rmSync(def.rootfs, { recursive: true, force: true });
  rmSync(vserverPaths(name).dir, { recursive: true, force: true });
  removeEmptyCgroupParents(name);
}

/** crun removes a container's cgroups but not their shared parent: remove it once it is empty. */
export function removeEmptyCgroupParents(name: string): void {
  const parent = cgroupsPath(name).split('/')[1] ?? '';
  if (!parent || !existsSync('/sys/fs/cgroup')) return;
  for (const ctl of readdirSync('/sys/fs/cgroup')) {
    try {
      rmdirSync(`/sys/fs/cgroup/${ctl}/${parent}`);
    } catch {}
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const SUPERVISOR_MAIN = fileURLToPath(new URL('./supervisor-main.ts', import.meta.url));

function spawnSupervisor(name: string): void {
  const old = readRuntime(name).supervisorPid;
  if (old && isAlive(old)) return;
  const p = vserverPaths(name);
  const log = openSync(`${p.dir}/supervisor.log`, 'a');
  const child = spawn(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', SUPERVISOR_MAIN, 'supervise', name],
    {
      detached: true,
      stdio: ['ignore', log, log],
    },
  );
  closeSync(log);
  child.unref();
  updateRuntime(name, (r) => ({ ...r, supervisorPid: child.pid }));
}

export interface VserverStatus {
  name: string;
  state: ContainerState['status'];
  pid?: number;
  desired: string;
  addresses: string[];
  health: Record<string, string>;
  restarts: number;
  oomKills: number;
}

export async function vserverStatus(name: string): Promise<VserverStatus> {
  const def = mustDefinition(name);
  const st = await containerState(name);
  const rec = readRuntime(name);
  return {
    name,
    state: st.status,
    pid: st.pid,
    desired: rec.desired,
    addresses: def.network?.addresses ?? [],
    health: rec.health ?? {},
    restarts: rec.restarts.length,
    oomKills: rec.oomKills ?? 0,
  };
}

export function listVservers(): Promise<VserverStatus[]> {
  return Promise.all(listNames().map(vserverStatus));
}
