/**
 * What one node does to its volumes and vservers: the imperative shell the agent's actions run
 * through. Start = volume replica up → primary with the epoch (mkfs only on a device without a
 * filesystem) → mounted at <stateDir>/mnt/<vserver> → root fs from the template if empty →
 * definition from the spec → container + supervisor. Stop runs it in reverse. Every step looks
 * at what is there first, so a start after a crash or a re-adoption just continues.
 */
import { existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ClusterSpec, VserverSpec } from '../cluster/config.ts';
import { errorMessage } from '../lib/errors.ts';
import { run, tryRun } from '../lib/exec.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { readMounts } from '../lib/mounts.ts';
import { stateDir as defaultStateDir, volumeDir } from '../lib/paths.ts';
import { type Phases, phases } from '../lib/phases.ts';
import { callControl } from '../volume/control.ts';
import { volumeLayout } from '../volume/layout.ts';
import {
  createVolume,
  listVolumes,
  type VolumeStatus,
  volumeDown,
  volumeSecondary,
  volumeStatus,
  volumeUp,
} from '../volume/lifecycle.ts';
import { readMetadata } from '../volume/metadata.ts';
import { readReplicationConfig } from '../volume/replication-config.ts';
import { quickStatus, runningFromStatusFile } from '../vserver/crun.ts';
import type { VserverDefinition } from '../vserver/definition.ts';
import {
  containerState,
  createVserver,
  removeEmptyCgroupParents,
  runtime,
  startVserver,
  stopContainer,
} from '../vserver/manager.ts';
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
} from '../vserver/store.ts';
import { checkLabel } from '../vserver/supervisor.ts';
import { createBusyboxRootfs, createDebianRootfs } from '../vserver/templates.ts';
import { guardPaths, liveGuardPid } from './guard.ts';
import {
  type ContainerStatus,
  NO_VOLUME,
  type ResourceObservation,
  summarizeHealth,
  summarizeVolume,
} from './resources/observation.ts';
import { cgroupPids, isSupervisor, readPid, volumeDaemonPid } from './resources/processes.ts';
import { writePlannedReplication } from './resources/replica-peers.ts';
import { replicaPlan } from './resources/replica-plan.ts';
import { planStaleCleanup, type StaleAction } from './resources/stale-plan.ts';
import { inStateDir } from './resources/state-dir-scope.ts';

export type { ResourceObservation } from './resources/observation.ts';

export interface ReplicaContext {
  cluster: ClusterSpec;
  /** This node's name. */
  node: string;
  /** The volume's UUID, the same on every replica. */
  uuid: string;
  /** Every replica is new (all zeros): no initial sync. */
  blank: boolean;
  secretFile: string;
  /** Replica nodes whose lease has ended (they fenced themselves): a promotion does not wait for them. */
  downPeers?: string[];
}

export interface NodeResources {
  /** The volume exists here (created if missing) and its daemon is up (a failed one is repaired). */
  ensureReplica(spec: VserverSpec, ctx: ReplicaContext): Promise<void>;
  /** Primary with `epoch`, mounted, root fs, definition, container and supervisor running. */
  start(spec: VserverSpec, epoch: number, ctx: ReplicaContext): Promise<void>;
  /** Supervisor and container (hard: SIGKILL at once), unmount, volume secondary. */
  stop(spec: VserverSpec, hard: boolean, reason: string): Promise<void>;
  /** Supervisor and container only, for a restart in place (same epoch: the volume stays primary). */
  stopContainerOnly(spec: VserverSpec, reason: string): Promise<void>;
  observe(spec: VserverSpec): Promise<ResourceObservation>;
  /** The container and its health only: cheap enough for every loop turn (no crun or losetup spawned). */
  observeRunning(spec: VserverSpec): Promise<Pick<ResourceObservation, 'container' | 'health'>>;
  /** After a crash or power cut: what hangs on dead volume daemons of this state dir, and stale pid files. */
  cleanupStale(): Promise<void>;
}

/** How long a soft stop waits for the unmount before it fails suspended I/O; a hard stop is at a fence. */
const UNMOUNT_WAIT_MS = { soft: 20_000, hard: 2_000 };
/** After failing suspended I/O: how long the unmount may still take before the daemon is killed. */
const UNMOUNT_GRACE_MS = 5_000;

export function mountPoint(stateDir: string, vserver: string): string {
  return join(stateDir, 'mnt', vserver);
}

export function createNodeResources(o: { stateDir?: string; log?: Logger } = {}): NodeResources {
  const dir = o.stateDir ?? defaultStateDir();
  const log = o.log ?? createLogger('resources', { stateDir: dir });
  const scoped = <T>(fn: () => Promise<T> | T) => inStateDir(dir, fn);
  const progress = (vserver: string) => (message: string) => log.debug({ vserver }, message);

  /** ensureReplica, answering the volume's status as found (before any repair or daemon start). */
  const ensureReplicaFound = (spec: VserverSpec, ctx: ReplicaContext) =>
    scoped(async (): Promise<VolumeStatus> => {
      const name = spec.name;
      const plan = replicaPlan(spec, ctx.cluster, ctx.node, ctx.secretFile);
      const vdir = volumeDir(name);
      if (!existsSync(join(vdir, 'meta.json'))) {
        createVolume(name, spec.volume.size, {
          uuid: ctx.uuid,
          blank: ctx.blank,
          diskless: plan.role === 'tiebreaker',
          replication: plan.replication,
        });
        log.info(
          { vserver: name, event: 'volume-created', role: plan.role, uuid: ctx.uuid, blank: ctx.blank },
          `volume ${name} created here (${plan.role === 'tiebreaker' ? 'diskless tiebreaker' : 'data replica'})`,
        );
      } else {
        const meta = readMetadata(vdir);
        if (meta.uuid !== ctx.uuid)
          throw new Error(
            `volume ${name} on this node has uuid ${meta.uuid}, the cluster's is ${ctx.uuid}: not touching it`,
          );
        const onDisk = readReplicationConfig(vdir);
        if (!onDisk) throw new Error(`volume ${name} on this node is a local volume, not a replica`);
        if (writePlannedReplication(vdir, onDisk, plan.replication))
          log.info(
            { vserver: name, event: 'replication-config-updated' },
            'replication.yaml follows the cluster spec (the agent has a running daemon adjust to it)',
          );
      }
      const before = await volumeStatus(name);
      if (before.health === 'failed') {
        // The volume's filesystem only returns EIO now: a container still on it is useless.
        if (isRunning((await containerState(name)).status)) {
          log.warn({ vserver: name, event: 'container-killed' }, 'volume failed under a running container');
          await stopVserverProcesses(name, true, 'its volume failed (daemon died)');
        }
        log.warn(
          { vserver: name, event: 'volume-repair' },
          `volume failed (${before.reason}): down, then up`,
        );
        await volumeDown(name, progress(name), { force: true });
      }
      if (before.pid === null || before.health === 'failed') {
        await volumeUp(name, {}, progress(name));
        log.info({ vserver: name, event: 'volume-up' }, 'volume daemon up');
      }
      return before;
    });
  const ensureReplica = async (spec: VserverSpec, ctx: ReplicaContext) => {
    await ensureReplicaFound(spec, ctx);
  };

  /** Desired stopped, supervisor gone, container stopped (hard: SIGKILL at once) and deleted. */
  /** `alongside`: run once the container's processes are gone, while crun deletes it (see stopContainer). */
  async function stopVserverProcesses(
    name: string,
    hard: boolean,
    reason: string,
    took?: Phases,
    alongside?: () => Promise<void>,
  ): Promise<void> {
    const def = readDefinition(name);
    if (!def) {
      if ((await containerState(name)).status !== 'absent') await runtime().delete(name);
      await alongside?.();
      return;
    }
    updateRuntime(name, (r) => ({ ...r, desired: 'stopped' }));
    const sup = readRuntime(name).supervisorPid;
    if (isSupervisor(sup, name)) {
      try {
        process.kill(sup, hard ? 'SIGKILL' : 'SIGTERM');
      } catch {}
    }
    updateRuntime(name, (r) => ({ ...r, supervisorPid: undefined }));
    took?.mark('supervisor');
    const how = await stopContainer(
      hard ? { ...def, stop: { signal: 'SIGKILL', timeout: 0 } } : def,
      hard ? `${reason} (hard)` : reason,
      took,
      alongside,
    );
    removeEmptyCgroupParents(name);
    log.info({ vserver: name, event: 'container-stopped', how, hard, reason }, `container ${how}`);
  }

  /** Primary → secondary; an unmount stuck on suspended I/O or a failed volume: down, then up as secondary. */
  /** `found`: the volume's status taken while the container stopped (nothing there changes it). */
  async function releaseVolume(name: string, hard: boolean, found?: Promise<VolumeStatus>): Promise<void> {
    const s = (await found?.catch(() => undefined)) ?? (await volumeStatus(name));
    if (s.health === 'failed') return downThenUp(name, `failed: ${s.reason}`);
    if (s.pid === null) {
      await volumeUp(name, {}, progress(name));
      return;
    }
    if (s.daemon?.role !== 'Primary' && s.loop === null && s.mounts.length === 0) return;
    let demoted: VolumeStatus | undefined;
    const demoting = volumeSecondary(name, progress(name)).then(
      (status) => {
        demoted = status;
        return 'done' as const;
      },
      (err: unknown) => errorMessage(err),
    );
    let outcome = await within(demoting, hard ? UNMOUNT_WAIT_MS.hard : UNMOUNT_WAIT_MS.soft);
    if (outcome === undefined) {
      // Writes held for quorum keep the unmount waiting: fail them, then the daemon if that is not enough.
      log.warn({ vserver: name, event: 'unmount-stuck' }, 'unmount is stuck: failing suspended I/O');
      const l = volumeLayout(name);
      await callControl(l.controlSocket, { op: 'fail-suspended-io' }, 5_000).catch(() => undefined);
      outcome = await within(demoting, UNMOUNT_GRACE_MS);
      if (outcome === undefined) {
        const pid = volumeDaemonPid(l.dir);
        log.warn(
          { vserver: name, event: 'daemon-killed', pid },
          'unmount still stuck: killing the volume daemon',
        );
        if (pid) process.kill(pid, 'SIGKILL');
        outcome = await demoting;
      }
    }
    if (outcome !== 'done') return downThenUp(name, outcome);
    const after = demoted ?? (await volumeStatus(name));
    if (after.health === 'failed' || after.loop !== null) return downThenUp(name, after.reason);
  }

  async function downThenUp(name: string, why: string): Promise<void> {
    log.warn(
      { vserver: name, event: 'volume-down-up', reason: why },
      'volume down (force), then up as secondary',
    );
    await volumeDown(name, progress(name), { force: true });
    await volumeUp(name, {}, progress(name));
  }

  const start = async (spec: VserverSpec, epoch: number, ctx: ReplicaContext) => {
    const took = phases();
    // Each status asks the volume daemon: the one ensureReplica took serves (a daemon it started is no primary).
    const before = await ensureReplicaFound(spec, ctx);
    took.mark('replica');
    await scoped(async () => {
      const name = spec.name;
      const mnt = mountPoint(dir, name);
      mkdirSync(mnt, { recursive: true });
      if (before.daemon?.role === 'Primary' && before.epoch !== epoch)
        log.warn(
          { vserver: name, event: 'epoch-kept', epoch: before.epoch, wanted: epoch },
          'already primary: keeps its epoch',
        );
      const mounted = await volumeUp(
        name,
        { primary: { epoch, absent: ctx.downPeers ?? [] }, mkfs: spec.volume.filesystem, mountDir: mnt },
        progress(name),
      );
      took.mark('primary-mount');
      if (!mounted.mounts.includes(mnt)) throw new Error(`volume ${name} is not mounted on ${mnt}`);
      log.info(
        { vserver: name, event: 'volume-primary', epoch: mounted.epoch },
        `primary, mounted on ${mnt}`,
      );
      ensureRootfs(mnt, spec.template, (m) => log.info({ vserver: name, event: 'rootfs-created' }, m));
      writeDefinition(definitionOf(spec, mnt));
      const state = await quickStatus(runtime(), crunRoot(), name);
      if (state !== 'running') updateRuntime(name, (r) => ({ ...r, health: {}, restarts: [] }));
      // Starts the container unless it runs, and the supervisor unless it lives.
      took.mark('rootfs');
      await startVserver(name, took);
      log.info(
        { vserver: name, event: 'vserver-started', epoch, adopted: state === 'running', ms: took.ms },
        'running',
      );
    });
  };

  const stop = (spec: VserverSpec, hard: boolean, reason: string) =>
    scoped(async () => {
      const name = spec.name;
      const took = phases();
      if (!existsSync(join(volumeDir(name), 'meta.json'))) return stopVserverProcesses(name, hard, reason);
      // The volume daemon is asked for its state while the container stops, and the volume released
      // while crun deletes the container: its processes, and so its mounts, are gone by then.
      const found = volumeStatus(name);
      found.catch(() => undefined);
      await stopVserverProcesses(name, hard, reason, took, () => releaseVolume(name, hard, found));
      log.info({ vserver: name, event: 'stopped', hard, reason, ms: took.ms }, 'stopped, volume secondary');
    });

  /** A restart in place keeps the epoch: the volume stays primary and mounted, only the container goes. */
  const stopContainerOnly = (spec: VserverSpec, reason: string) =>
    scoped(async () => {
      await stopVserverProcesses(spec.name, false, reason);
      log.info(
        { vserver: spec.name, event: 'container-stopped', reason },
        'container stopped, volume kept primary',
      );
    });

  const observe = (spec: VserverSpec) =>
    scoped(async (): Promise<ResourceObservation> => {
      const name = spec.name;
      const def = readDefinition(name);
      const container = await quickContainerState(name);
      const labels = (def?.health_checks ?? []).map(checkLabel);
      const health = summarizeHealth(container, labels, def ? readRuntime(name).health : undefined);
      let volume = NO_VOLUME;
      if (existsSync(join(volumeDir(name), 'meta.json'))) {
        let s: VolumeStatus | undefined;
        try {
          s = await volumeStatus(name);
        } catch (err) {
          log.warn({ vserver: name, err: errorMessage(err) }, 'volume status failed');
        }
        volume = summarizeVolume(s);
      }
      return { container, health, volume };
    });

  const observeRunning = (spec: VserverSpec) =>
    scoped(async () => {
      const name = spec.name;
      const def = readDefinition(name);
      const container = await quickContainerState(name);
      const labels = (def?.health_checks ?? []).map(checkLabel);
      return {
        container,
        health: summarizeHealth(container, labels, def ? readRuntime(name).health : undefined),
      };
    });

  /** crun is spawned only when its files cannot tell: no state dir means no container. */
  const quickContainerState = async (name: string): Promise<ContainerStatus> => {
    const fast = runningFromStatusFile(crunRoot(), name);
    if (fast) return 'running';
    if (fast === undefined && !existsSync(join(crunRoot(), name))) return 'absent';
    return (await containerState(name)).status;
  };

  const cleanupStale = () =>
    scoped(async () => {
      const volumes = listVolumes().map((name) => ({
        name,
        daemonAlive: volumeDaemonPid(volumeDir(name)) !== undefined,
      }));
      const containers = await Promise.all(
        listContainers().map(async (name) => ({ name, status: (await containerState(name)).status })),
      );
      const actions = planStaleCleanup({
        stateDir: dir,
        mounts: readMounts(),
        loops: await listLoops(),
        volumes,
        containers,
      });
      for (const a of actions) {
        try {
          await executeStale(a);
          log.info({ event: 'stale-cleaned', action: a }, `${a.kind}: ${a.reason}`);
        } catch (err) {
          log.warn({ event: 'stale-clean-failed', action: a, err: errorMessage(err) }, `${a.kind} failed`);
        }
      }
      removeStalePidFiles(
        dir,
        volumes.filter((v) => !v.daemonAlive).map((v) => v.name),
        (m) => log.info({ event: 'stale-cleaned' }, m),
      );
    });

  async function executeStale(a: StaleAction): Promise<void> {
    switch (a.kind) {
      case 'kill-container': {
        if (readDefinition(a.name)) await stopVserverProcesses(a.name, true, a.reason);
        for (const pid of cgroupPids(cgroupsPath(a.name))) killQuietly(pid);
        await runtime().delete(a.name);
        return;
      }
      case 'delete-container':
        await runtime().delete(a.name);
        return;
      case 'unmount':
        if (!(await tryRun('umount', [a.dir]))) await run('umount', ['-l', a.dir]);
        return;
      case 'detach-loop':
        await run('losetup', ['-d', a.loop]);
        return;
      case 'unmount-fuse':
        await run('umount', ['-l', a.dir]);
        return;
    }
  }

  return { ensureReplica, start, stop, stopContainerOnly, observe, observeRunning, cleanupStale };
}

function isRunning(s: string): boolean {
  return s === 'running' || s === 'created' || s === 'paused';
}

async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {}
}

/** I/O through one of this node's volume daemons since it started (the FUSE side: the primary's). */
export interface LocalVolumeCounters {
  volume: string;
  reads: number;
  writes: number;
  fsyncs: number;
  bytesRead: number;
  bytesWritten: number;
}

/** I/O counters of this state dir's running volume daemons (for /metrics), each asked briefly. */
export function localVolumeCounters(stateDir: string): Promise<LocalVolumeCounters[]> {
  return inStateDir(stateDir, async () => {
    const out: LocalVolumeCounters[] = [];
    for (const volume of listVolumes()) {
      const s = await within(
        volumeStatus(volume).catch(() => undefined),
        1000,
      );
      const c = s?.daemon?.counters;
      if (c) out.push({ volume, ...c });
    }
    return out;
  });
}

/** The vserver as the cluster spec declares it, on the volume's mount; restarts are the manager's call. */
export function definitionOf(spec: VserverSpec, rootfs: string): VserverDefinition {
  return {
    ...spec.definition,
    name: spec.name,
    rootfs,
    restart: { ...spec.definition.restart, policy: 'no', max_restarts: 0 },
  };
}

/** Creates the vserver's files, or refreshes its definition when the spec changed (applies at the next start). */
function writeDefinition(def: VserverDefinition): void {
  const current = readDefinition(def.name);
  if (!current) {
    createVserver(def, undefined);
    return;
  }
  if (JSON.stringify(current) === JSON.stringify(def)) return;
  writeJsonAtomic(vserverPaths(def.name).definition, def);
  recordEvent(def.name, 'redefined', 'definition refreshed from the cluster spec');
}

const STAGING = '.cvserver-template';

/**
 * A root fs from the template when the volume has none (no /bin). A fresh ext4 holds lost+found,
 * which the template helpers would refuse: the template is made in a staging directory on the same
 * filesystem and moved up, /bin last, so a crash part-way is redone at the next start.
 */
export function ensureRootfs(
  mnt: string,
  template: VserverSpec['template'],
  note: (m: string) => void,
): void {
  if (present(join(mnt, 'bin'))) return;
  const staging = join(mnt, STAGING);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging);
  if (template === 'debian') createDebianRootfs(staging, templateCacheDir());
  else createBusyboxRootfs(staging);
  const entries = readdirSync(staging).sort((a, b) => Number(a === 'bin') - Number(b === 'bin'));
  for (const e of entries) {
    rmSync(join(mnt, e), { recursive: true, force: true });
    renameSync(join(staging, e), join(mnt, e));
  }
  rmdirSync(staging);
  note(`root fs made from template ${template}`);
}

function present(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function listContainers(): string[] {
  try {
    return readdirSync(crunRoot(), { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
  } catch {
    return [];
  }
}

async function listLoops(): Promise<Array<{ name: string; backFile: string }>> {
  const r = await run('losetup', ['--list', '--json', '-O', 'NAME,BACK-FILE']);
  if (!r.stdout.trim()) return [];
  const parsed = JSON.parse(r.stdout) as {
    loopdevices?: Array<{ name: string; 'back-file': string | null }>;
  };
  return (parsed.loopdevices ?? []).map((d) => ({ name: d.name, backFile: d['back-file'] ?? '' }));
}

/** Pid and lock files whose process is gone: daemons, volume locks, supervisors, the guard. */
function removeStalePidFiles(dir: string, deadVolumes: string[], note: (m: string) => void): void {
  for (const v of deadVolumes) {
    const l = volumeLayout(v);
    for (const f of [l.pidFile, l.controlSocket])
      if (existsSync(f)) {
        rmSync(f, { force: true });
        note(`removed ${f}`);
      }
  }
  for (const v of listVolumes()) {
    const lock = volumeLayout(v).lockFile;
    const owner = readPid(lock);
    if (existsSync(lock) && (!owner || !existsSync(`/proc/${owner}`))) {
      rmSync(lock, { force: true });
      note(`removed ${lock}`);
    }
  }
  for (const name of listNames()) {
    const sup = readRuntime(name).supervisorPid;
    if (sup !== undefined && !isSupervisor(sup, name)) {
      updateRuntime(name, (r) => ({ ...r, supervisorPid: undefined }));
      note(`vserver ${name}: forgot dead supervisor ${sup}`);
    }
  }
  const guard = guardPaths(dir);
  if (existsSync(guard.pidFile) && liveGuardPid(dir) === undefined) {
    rmSync(guard.pidFile, { force: true });
    rmSync(guard.socket, { force: true });
    note(`removed ${guard.pidFile}`);
  }
}
