import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FUSE_FSTYPE, unmountFuse } from '../fuse/mount.ts';
import { errnoCode, UserError } from '../lib/errors.ts';
import { run, tryRun } from '../lib/exec.ts';
import { readJsonOr } from '../lib/json-file.ts';
import { readMounts } from '../lib/mounts.ts';
import { volumesDir } from '../lib/paths.ts';
import { formatSize } from '../lib/size.ts';
import { callControl } from './control.ts';
import {
  type DaemonStatus,
  DEVICE_FILE_NAME,
  snapshotFuseDir,
  type VolumeLayout,
  volumeLayout,
} from './layout.ts';
import { BLOCK_SIZE, newMetadata, readMetadata, type VolumeMetadata, writeMetadata } from './metadata.ts';
import {
  type Health,
  health,
  planDown,
  planSecondary,
  planUp,
  type SnapshotDevice,
  type Step,
  type UpOptions,
  type VolumeObservation,
} from './plan.ts';
import type { VerifyResult } from './replication/replicated-device.ts';
import {
  type AdjustPlan,
  type ReplicationConfigFile,
  readReplicationConfig,
  readSecret,
  replicationConfigPath,
  replicationConfigSchema,
  writeReplicationConfig,
} from './replication-config.ts';

const LOG_ROTATE_BYTES = 16 * 1024 * 1024;
const NAME_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const DAEMON = join(dirname(fileURLToPath(import.meta.url)), 'daemon.ts');

export function checkName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new UserError(
      `volume name "${name}" is invalid (expected lowercase letters, digits, - or _, at most 63, starting with a letter or digit)`,
    );
  }
}

export interface CreateOptions {
  /** Replicas of one volume share its UUID: give the first replica's to the others. */
  uuid?: string;
  /**
   * With a UUID: this replica joins a volume that may already hold data, so it starts Inconsistent
   * and receives a full sync. `blank` asserts that every replica is new (all zeros): no initial sync.
   */
  blank?: boolean;
  /** A diskless tiebreaker: no data file, it only votes. */
  diskless?: boolean;
  replication?: ReplicationConfigFile;
}

/**
 * Creates a volume: a sparse data file of `size` bytes and its metadata (and its replication config).
 * Everything is validated first; nothing is left behind on failure.
 */
export function createVolume(name: string, size: number, o: CreateOptions = {}): VolumeMetadata {
  checkName(name);
  if (o.uuid !== undefined && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(o.uuid))
    throw new UserError(`--uuid "${o.uuid}": expected a UUID like 3f2c1e9a-8b7d-4c6e-9a1f-2b3c4d5e6f70`);
  if (o.uuid !== undefined && !o.replication)
    throw new UserError(
      '--uuid: joining a replicated volume needs the replication options (--node, --listen, --peer)',
    );
  if (o.diskless && !o.replication)
    throw new UserError('--diskless: a tiebreaker needs the replication options (--node, --listen, --peer)');
  if (o.replication) {
    const parsed = replicationConfigSchema.safeParse(o.replication);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UserError(`replication options: ${issue.path.join('.') || 'config'}: ${issue.message}`);
    }
    readSecret(o.replication.secretFile);
  }
  if (size <= 0 || size % BLOCK_SIZE !== 0)
    throw new UserError(`size ${size} must be a positive multiple of ${BLOCK_SIZE} bytes`);
  if (size < 16 * 1024 * 1024) throw new UserError(`size must be at least 16M (got ${size} bytes)`);
  const l = volumeLayout(name);
  if (existsSync(l.dir)) throw new UserError(`volume "${name}" already exists (${l.dir})`);
  mkdirSync(volumesDir(), { recursive: true });
  const tmpDir = `${l.dir}.creating-${process.pid}`;
  try {
    mkdirSync(tmpDir);
    if (!o.diskless) {
      // A sparse file: blocks are allocated as the filesystem above writes them.
      const fd = openSync(join(tmpDir, 'data'), 'wx');
      try {
        ftruncateSync(fd, size);
      } finally {
        closeSync(fd);
      }
    }
    const base = newMetadata(name, size);
    const uuid = o.uuid ?? base.uuid;
    const joining = o.uuid !== undefined && !o.blank;
    const meta: VolumeMetadata = {
      ...base,
      uuid,
      diskState: o.diskless ? 'Diskless' : joining ? 'Inconsistent' : 'UpToDate',
      // Blank replicas of one volume hold the same (all-zero) data: they share a first generation
      // derived from the UUID, so they start in sync. A joiner starts with none: it gets a full sync.
      generation: {
        current: joining || o.diskless ? '0' : initialGeneration(uuid),
        bitmap: '0',
        history: [],
      },
    };
    writeMetadata(tmpDir, meta);
    if (o.replication) writeReplicationConfig(tmpDir, o.replication);
    mkdirSync(join(tmpDir, 'run'));
    // Renamed last, so a crash mid-way never leaves a half-made volume under its real name.
    renameSync(tmpDir, l.dir);
    return meta;
  } catch (err) {
    rmSync(tmpDir, { recursive: true, force: true });
    throw err;
  }
}

function initialGeneration(uuid: string): string {
  return createHash('sha256').update(`cvserver-initial-generation:${uuid}`).digest('hex').slice(0, 16);
}

export function listVolumes(): string[] {
  try {
    return readdirSync(volumesDir())
      .filter((n) => NAME_RE.test(n) && existsSync(join(volumesDir(), n, 'meta.json')))
      .sort();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

export function requireVolume(name: string): { layout: VolumeLayout; meta: VolumeMetadata } {
  checkName(name);
  const layout = volumeLayout(name);
  if (!existsSync(layout.dir))
    throw new UserError(
      `volume "${name}" does not exist (create it with \`cvserver volume create ${name} --size SIZE\`)`,
    );
  return { layout, meta: readMetadata(layout.dir) };
}

export function daemonPid(l: VolumeLayout): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(l.pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  // Check it is our daemon for this volume, not a recycled pid.
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('daemon.ts') && cmdline.includes(l.dir) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The loop devices backed by `file`, from sysfs (what `losetup --list` reads, without spawning it:
 * the node agent asks every few seconds). A bound loop device has `loop/backing_file`.
 */
export async function loopsOf(file: string): Promise<string[]> {
  return loopBackings().get(file) ?? [];
}

/** Every bound loop device by backing file, from one pass over sysfs. */
function loopBackings(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const dev of readdirSync('/sys/block').filter((d) => /^loop\d+$/.test(d))) {
    let backing: string;
    try {
      backing = readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8')
        .trim()
        .replace(/ \(deleted\)$/, '');
    } catch {
      continue; // not bound
    }
    out.set(backing, [...(out.get(backing) ?? []), `/dev/${dev}`]);
  }
  return out;
}

/** Snapshots of the volume exposed as read-only devices, from their directories, mounts and loops. */
function observeSnapshotDevices(
  l: VolumeLayout,
  mounts: ReturnType<typeof readMounts>,
  backings: Map<string, string[]>,
): SnapshotDevice[] {
  let names: string[];
  try {
    names = readdirSync(l.snapshotsDir);
  } catch {
    return [];
  }
  const out: SnapshotDevice[] = [];
  for (const snapshot of names) {
    const fuseDir = snapshotFuseDir(l, snapshot);
    const deviceFile = join(fuseDir, DEVICE_FILE_NAME);
    const loops = backings.get(deviceFile) ?? [];
    const fuseMounted = mounts.some((m) => m.dir === fuseDir && m.fstype === FUSE_FSTYPE);
    if (!fuseMounted && loops.length === 0) continue;
    out.push({
      snapshot,
      fuseDir,
      deviceFile,
      fuseMounted,
      loops,
      fsMounts: mounts.filter((m) => loops.includes(m.source)).map((m) => ({ loop: m.source, dir: m.dir })),
    });
  }
  return out;
}

export async function observe(l: VolumeLayout): Promise<VolumeObservation> {
  const mounts = readMounts();
  const backings = loopBackings();
  const loops = backings.get(l.deviceFile) ?? [];
  const daemonAlive = daemonPid(l) !== undefined;
  const snapshotDevices = observeSnapshotDevices(l, mounts, backings);
  return {
    ...(snapshotDevices.length ? { snapshotDevices } : {}),
    daemonAlive,
    replicated: existsSync(replicationConfigPath(l.dir)),
    role: daemonAlive ? readJsonOr<DaemonStatus>(l.statusFile)?.role : undefined,
    fuseMounted: mounts.some((m) => m.dir === l.fuseDir && m.fstype === FUSE_FSTYPE),
    loops,
    fsMounts: mounts.filter((m) => loops.includes(m.source)).map((m) => ({ loop: m.source, dir: m.dir })),
  };
}

export interface VolumeStatus {
  name: string;
  uuid: string;
  size: number;
  health: Health;
  reason: string;
  diskState: VolumeMetadata['diskState'];
  epoch: number;
  pid: number | null;
  loop: string | null;
  mounts: string[];
  daemon: DaemonStatus | null;
  /** Replicated volumes: this node's name and the configured peers. */
  replication: { node: string; listen: string; peers: ReplicationConfigFile['peers'] } | null;
  /** replication.yaml cannot be read (a broken hand edit): why. The daemon keeps its settings. */
  configError?: string;
}

export async function volumeStatus(name: string): Promise<VolumeStatus> {
  const { layout, meta } = requireVolume(name);
  // A broken replication.yaml must not hide the state of the daemon that runs with the old one.
  let cfg: ReplicationConfigFile | undefined;
  let configError: string | undefined;
  try {
    cfg = readReplicationConfig(layout.dir);
  } catch (err) {
    configError = (err as Error).message;
  }
  const o = await observe(layout);
  const h = health(o);
  const pid = o.daemonAlive ? (daemonPid(layout) ?? null) : null;
  return {
    name,
    uuid: meta.uuid,
    size: meta.size,
    health: h.health,
    reason: h.reason,
    diskState: meta.diskState,
    epoch: meta.epoch,
    pid,
    loop: o.loops[0] ?? null,
    mounts: o.fsMounts.map((m) => m.dir),
    daemon: o.daemonAlive ? await daemonStatus(layout, cfg !== undefined || configError !== undefined) : null,
    replication: cfg ? { node: cfg.node, listen: cfg.listen, peers: cfg.peers } : null,
    ...(configError !== undefined ? { configError } : {}),
  };
}

/** A replica daemon answers live on its control socket; the status file (1 s old at most) is the fallback. */
async function daemonStatus(l: VolumeLayout, replicated: boolean): Promise<DaemonStatus | null> {
  if (replicated && existsSync(l.controlSocket)) {
    try {
      return await callControl(l.controlSocket, { op: 'status' }, 5000);
    } catch {}
  }
  return readJsonOr<DaemonStatus>(l.statusFile) ?? null;
}

export type Progress = (message: string) => void;
const noop = (): void => {};

export async function volumeUp(
  name: string,
  opts: UpOptions,
  progress: Progress = () => {},
): Promise<VolumeStatus> {
  const { layout, meta } = requireVolume(name);
  if (opts.mkfs && !['ext4', 'xfs'].includes(opts.mkfs))
    throw new UserError(`--mkfs: "${opts.mkfs}" is not supported (expected ext4 or xfs)`);
  if (opts.mountDir && !existsSync(opts.mountDir))
    throw new UserError(`--mount: directory ${opts.mountDir} does not exist`);
  const cfg = readReplicationConfig(layout.dir);
  if (cfg) readSecret(cfg.secretFile);
  if (opts.primary && !cfg)
    throw new UserError(`volume "${name}" is not replicated: it is always primary (no replication.yaml)`);
  if (opts.primary && meta.diskState === 'Diskless')
    throw new UserError(`volume "${name}" is a diskless tiebreaker here: it cannot become primary`);
  if (cfg && !opts.primary && (opts.mkfs || opts.mountDir))
    throw new UserError(
      `volume "${name}" is replicated: only the primary has a block device (add --primary, or use \`cvserver volume primary\`)`,
    );
  await withLock(layout, async () => {
    for (const step of planUp(await observe(layout), opts)) await execute(layout, step, progress);
  });
  return volumeStatus(name);
}

/** The daemon's log (JSON lines: role changes, peer connections, resyncs, refusals), newest last. */
export function volumeLog(name: string, lines: number): string[] {
  const { layout } = requireVolume(name);
  if (!existsSync(layout.logFile)) return [];
  return readFileSync(layout.logFile, 'utf8').split('\n').filter(Boolean).slice(-lines);
}

/** Deletes a volume that is down on this node: its data, metadata and replication state. */
export async function destroyVolume(name: string): Promise<void> {
  const { layout } = requireVolume(name);
  await withLock(layout, async () => {
    const o = await observe(layout);
    if (o.daemonAlive || o.fuseMounted || o.loops.length > 0)
      throw new UserError(
        `volume "${name}" is up or in use here (run \`cvserver volume down ${name}\` first)`,
      );
    // Renamed first: a crash mid-way never leaves a half-deleted volume under its name.
    const doomed = `${layout.dir}.destroying-${process.pid}`;
    renameSync(layout.dir, doomed);
    rmSync(doomed, { recursive: true, force: true });
  });
}

/** Primary → secondary: unmount, detach, then the daemon unmounts FUSE and demotes. */
export async function volumeSecondary(name: string, progress: Progress = () => {}): Promise<VolumeStatus> {
  const { layout } = requireReplicated(name);
  await withLock(layout, async () => {
    const o = await observe(layout);
    if (!o.daemonAlive)
      throw new UserError(`volume "${name}" is not up (run \`cvserver volume up ${name}\`)`);
    for (const step of planSecondary(o)) await execute(layout, step, progress);
  });
  return volumeStatus(name);
}

/** Compares this primary's data with each peer's by block digests; `resync` repairs the differences. */
export async function volumeVerify(
  name: string,
  o: { peer?: string; resync: boolean },
  progress: Progress = () => {},
): Promise<VerifyResult[]> {
  const { layout } = requireReplicated(name);
  // Progress from the daemon's status while the (possibly long) verify runs.
  const ticker = setInterval(() => {
    callControl(layout.controlSocket, { op: 'status' }, 2000).then((s) => {
      const v = s.replication?.verifying;
      if (v)
        progress(
          `verifying against ${v.peer}: ${Math.floor((100 * v.doneBytes) / v.totalBytes)}% (${formatSize(v.doneBytes)} of ${formatSize(v.totalBytes)})`,
        );
    }, noop);
  }, 1000);
  try {
    return await callControl(layout.controlSocket, { op: 'verify', ...o }, 3_600_000);
  } finally {
    clearInterval(ticker);
  }
}

/** Split-brain: keep this node's data; the peer's diverging blocks are saved to a file first. */
export async function volumeResolveSplitBrain(
  name: string,
  peer: string,
): Promise<{ savedTo: string; bytesSaved: number }> {
  const { layout } = requireReplicated(name);
  return callControl(layout.controlSocket, { op: 'resolve-split-brain', peer }, 3_600_000);
}

/** What `volume adjust` may change from the command line (the rest of replication.yaml by hand). */
export type AdjustableSettings = Partial<
  Pick<ReplicationConfigFile, 'quorum' | 'afterSplitBrain' | 'resyncRate' | 'durableWrites'>
> & {
  /** Nodes that join the volume (`--add-peer NODE=HOST:PORT`) or leave it (`--remove-peer NODE`). */
  addPeers?: Array<{ node: string; address: string }>;
  removePeers?: string[];
};

/** The peer list with the given nodes added and removed; a name that does not fit is the user's error. */
function changedPeers(
  current: ReplicationConfigFile,
  add: Array<{ node: string; address: string }>,
  remove: string[],
): ReplicationConfigFile['peers'] | undefined {
  if (add.length === 0 && remove.length === 0) return undefined;
  for (const node of remove)
    if (!current.peers.some((p) => p.node === node))
      throw new UserError(`--remove-peer ${node}: not a peer of this volume (nothing changed)`);
  const kept = current.peers.filter((p) => !remove.includes(p.node));
  for (const p of add)
    if (p.node === current.node || kept.some((k) => k.node === p.node))
      throw new UserError(`--add-peer ${p.node}: already part of this volume (nothing changed)`);
  return [...kept, ...add.map((p) => ({ ...p, tiebreaker: false }))];
}

export interface AdjustResult extends AdjustPlan {
  /** replication.yaml was rewritten with the given settings. */
  saved: boolean;
  /** A daemon runs on this node (else the file is read at the next `volume up`). */
  running: boolean;
}

const SETTING_FLAGS: Record<string, string> = {
  quorum: '--quorum',
  afterSplitBrain: '--after-split-brain',
  resyncRate: '--resync-rate',
  durableWrites: '--durable-writes',
};

/**
 * `volume adjust`: writes the given settings into replication.yaml (validated first: a bad value
 * changes nothing), then has a running daemon re-read the file. Policies and the resync cap apply
 * at once; identity, addresses, the secret and the write mode at the next `down` + `up`.
 */
export async function volumeAdjust(name: string, settings: AdjustableSettings): Promise<AdjustResult> {
  const { layout } = requireVolume(name);
  return withLock(layout, async () => {
    const current = readReplicationConfig(layout.dir);
    if (!current)
      throw new UserError(`volume "${name}" is not replicated (no ${replicationConfigPath(layout.dir)})`);
    const { addPeers, removePeers, ...plain } = settings;
    const peers = changedPeers(current, addPeers ?? [], removePeers ?? []);
    const given = Object.fromEntries(Object.entries({ ...plain, peers }).filter(([, v]) => v !== undefined));
    let saved = false;
    if (Object.keys(given).length > 0) {
      const parsed = replicationConfigSchema.safeParse({ ...current, ...given });
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        const key = String(issue.path[0] ?? '');
        throw new UserError(`${SETTING_FLAGS[key] ?? key}: ${issue.message} (nothing changed)`);
      }
      if (JSON.stringify(parsed.data) !== JSON.stringify(current)) {
        writeReplicationConfig(layout.dir, parsed.data);
        saved = true;
      }
    }
    if (daemonPid(layout) === undefined)
      return { apply: [], peersAdded: [], peersRemoved: [], atRestart: [], saved, running: false };
    const plan = await callControl(layout.controlSocket, { op: 'adjust' }, 10_000);
    return { ...plan, saved, running: true };
  });
}

function requireReplicated(name: string): { layout: VolumeLayout; cfg: ReplicationConfigFile } {
  const { layout } = requireVolume(name);
  const cfg = readReplicationConfig(layout.dir);
  if (!cfg)
    throw new UserError(`volume "${name}" is not replicated (no ${replicationConfigPath(layout.dir)})`);
  if (daemonPid(layout) === undefined)
    throw new UserError(`volume "${name}" is not up here (run \`cvserver volume up ${name}\`)`);
  return { layout, cfg };
}

export async function volumeDown(
  name: string,
  progress: Progress = () => {},
  o: { force?: boolean } = {},
): Promise<VolumeStatus> {
  const { layout } = requireVolume(name);
  if (o.force && existsSync(layout.controlSocket) && daemonPid(layout) !== undefined) {
    // A primary without quorum holds its writes; the unmount below would wait for them forever.
    const r = await callControl(layout.controlSocket, { op: 'fail-suspended-io' }, 10_000);
    if (r.failed > 0) progress(`failed ${r.failed} writes that were waiting for quorum`);
  }
  await withLock(layout, async () => {
    for (const step of planDown(await observe(layout))) await execute(layout, step, progress);
  });
  return volumeStatus(name);
}

export async function execute(l: VolumeLayout, step: Step, progress: Progress): Promise<void> {
  switch (step.kind) {
    case 'unmount-fs':
      progress(`unmounting ${step.dir}`);
      if (!(await tryRun('umount', [step.dir]))) await run('umount', ['-l', step.dir]);
      return;
    case 'detach-loop':
      progress(`detaching ${step.loop}`);
      await run('losetup', ['-d', step.loop]);
      // losetup -d is asynchronous in the kernel: wait until the device has let go of the file.
      await waitFor(
        async () => !(await loopsOf(step.file ?? l.deviceFile)).includes(step.loop),
        10_000,
        `${step.loop} to detach`,
      );
      return;
    case 'unmount-fuse':
      progress('unmounting the FUSE device');
      try {
        await unmountFuse(l.fuseDir);
      } catch {
        await unmountFuse(l.fuseDir, true);
      }
      return;
    case 'unmount-snapshot-fuse':
      progress(`releasing the snapshot device ${step.dir}`);
      try {
        await unmountFuse(step.dir);
      } catch {
        await unmountFuse(step.dir, true);
      }
      return;
    case 'wait-daemon-exit': {
      progress('waiting for the volume daemon to exit');
      const pid = daemonPid(l);
      const gone = await waitFor(async () => daemonPid(l) === undefined, 15_000, 'the daemon to exit', false);
      if (!gone && pid) process.kill(pid, 'SIGKILL');
      return;
    }
    case 'start-daemon':
      progress('starting the volume daemon');
      await startDaemon(l);
      return;
    case 'promote': {
      progress(`becoming primary${step.epoch ? ` (epoch ${step.epoch})` : ''}`);
      const r = await callControl(l.controlSocket, {
        op: 'promote',
        epoch: step.epoch,
        force: step.force,
        ...(step.absent ? { absent: step.absent } : {}),
      });
      progress(`primary with epoch ${r.epoch}`);
      await waitFor(async () => readMounts().some((m) => m.dir === l.fuseDir), 10_000, 'the FUSE device');
      return;
    }
    case 'demote':
      progress('becoming secondary');
      await callControl(l.controlSocket, { op: 'demote' });
      return;
    case 'stop-daemon':
      progress('stopping the volume daemon');
      await callControl(l.controlSocket, { op: 'shutdown' });
      return;
    case 'attach-loop':
      progress('attaching a loop device (direct I/O)');
      await run('losetup', ['--find', '--direct-io=on', l.deviceFile]);
      return;
    case 'mkfs': {
      const loop = (await loopsOf(l.deviceFile))[0]!;
      const existing = await tryRun('blkid', ['-p', '-o', 'value', '-s', 'TYPE', loop]);
      if (existing?.stdout.trim()) {
        progress(`${loop} already has a ${existing.stdout.trim()} filesystem; not formatting`);
        return;
      }
      progress(`making a ${step.fstype} filesystem on ${loop}`);
      await run(`mkfs.${step.fstype}`, step.fstype === 'ext4' ? ['-q', '-F', loop] : ['-q', loop], {
        timeoutMs: 600_000,
      });
      return;
    }
    case 'mount-fs': {
      const loop = (await loopsOf(l.deviceFile))[0]!;
      progress(`mounting ${loop} on ${step.dir}`);
      await run('mount', [loop, step.dir]);
      return;
    }
  }
}

async function startDaemon(l: VolumeLayout): Promise<void> {
  mkdirSync(l.runDir, { recursive: true });
  mkdirSync(l.fuseDir, { recursive: true });
  rmSync(l.statusFile, { force: true });
  // One old log is kept; a long-lived daemon's log is small (its network input is rate-limited).
  if (existsSync(l.logFile) && statSync(l.logFile).size > LOG_ROTATE_BYTES)
    renameSync(l.logFile, `${l.logFile}.1`);
  const logFd = openSync(l.logFile, 'a');
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', DAEMON, l.dir], {
    detached: true,
    stdio: ['ignore', logFd, logFd],
    env: { ...process.env, UV_THREADPOOL_SIZE: '24' },
  });
  closeSync(logFd);
  let exited: number | null = null;
  child.on('exit', (code) => (exited = code ?? -1));
  child.unref();
  const ok = await waitFor(
    async () => {
      if (exited !== null) return true;
      const replicated = existsSync(replicationConfigPath(l.dir));
      return (
        readJsonOr<DaemonStatus>(l.statusFile)?.state === 'serving' &&
        (replicated ? existsSync(l.controlSocket) : readMounts().some((m) => m.dir === l.fuseDir))
      );
    },
    30_000,
    'the volume daemon to serve',
    false,
  );
  if (exited !== null || !ok) {
    const tail = readFileSync(l.logFile, 'utf8').trim().split('\n').slice(-3).join(' | ');
    throw new UserError(`volume daemon failed to start (see ${l.logFile}): ${tail}`);
  }
}

async function waitFor(
  cond: () => Promise<boolean>,
  ms: number,
  what: string,
  mustSucceed = true,
): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (mustSucceed) throw new UserError(`timed out waiting for ${what}`);
  return false;
}

/** One `up`/`down` at a time per volume: an exclusive lock file holding the owner's pid (stale ones are taken over). */
export async function withLock<T>(l: VolumeLayout, fn: () => Promise<T>): Promise<T> {
  mkdirSync(l.runDir, { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(l.lockFile, 'wx');
      writeFileSync(fd, `${process.pid}\n`);
      closeSync(fd);
      break;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      const owner = Number(readFileSync(l.lockFile, 'utf8').trim());
      if (!owner || !existsSync(`/proc/${owner}`)) {
        rmSync(l.lockFile, { force: true });
        continue;
      }
      if (attempt > 600)
        throw new UserError(
          `volume "${l.name}" is busy (another cvserver, pid ${owner}, holds ${l.lockFile})`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(l.lockFile, { force: true });
  }
}
