/**
 * The volume daemon, started detached by `cvserver volume up`.
 * - Local volume: serves the data file as `fuse/device` over our FUSE server; exits when that is
 *   unmounted (`volume down`).
 * - Replicated volume (replication.yaml present): runs the replica server, and serves FUSE over the
 *   replicated device only while primary. Controlled through `run/control.sock`.
 *   node src/volume/daemon.ts <volume-dir>
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { mountFuse, unmountFuse } from '../fuse/mount.ts';
import { FuseSession } from '../fuse/session.ts';
import { writeJsonAtomic } from '../lib/json-file.ts';
import { createLogger, type Logger } from '../lib/log.ts';
import { rateLimited } from '../lib/log-limiter.ts';
import type { BlockDevice } from './block-device.ts';
import {
  CONTROL_OPS,
  type ControlHandlers,
  type ControlOp,
  type ControlRequest,
  refuseControl,
  SNAPSHOT_OPS,
  serveControl,
} from './control.ts';
import { DeviceFilesystem } from './device-filesystem.ts';
import { type DaemonStatus, type VolumeLayout, volumeLayout } from './layout.ts';
import { LocalDevice } from './local-device.ts';
import { readMetadata, updateMetadata, type VolumeMetadata } from './metadata.ts';
import { ReplicaServer } from './replication/replica-server.ts';
import { MetadataReplicaStore } from './replication/replica-store.ts';
import { ReplicatedDevice } from './replication/replicated-device.ts';
import {
  peersInForce,
  planAdjust,
  type ReplicationConfigFile,
  readReplicationConfig,
  readSecret,
  replicationConfigPath,
  resyncRateBytes,
  splitAddress,
} from './replication-config.ts';
import { SnapshotService } from './snapshot/service.ts';
import { Snapshots } from './snapshot/snapshots.ts';

/** Concurrent /dev/fuse reads; CVSERVER_FUSE_READERS overrides it for tuning. */
const READERS = Number(process.env.CVSERVER_FUSE_READERS ?? 8);

const NO_COUNTERS: DaemonStatus['counters'] = {
  reads: 0,
  writes: 0,
  fsyncs: 0,
  bytesRead: 0,
  bytesWritten: 0,
  errors: 0,
};

/** Counts requests for `status`, around the real device. */
class CountingDevice implements BlockDevice {
  readonly counters: DaemonStatus['counters'] = { ...NO_COUNTERS };
  private readonly inner: BlockDevice;
  constructor(inner: BlockDevice) {
    this.inner = inner;
  }
  get size(): number {
    return this.inner.size;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    this.counters.reads++;
    this.counters.bytesRead += length;
    return this.count(this.inner.read(offset, length));
  }
  async write(offset: number, data: Buffer): Promise<void> {
    this.counters.writes++;
    this.counters.bytesWritten += data.length;
    return this.count(this.inner.write(offset, data));
  }
  async flush(): Promise<void> {
    this.counters.fsyncs++;
    return this.count(this.inner.flush());
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  private async count<T>(p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch (err) {
      this.counters.errors++;
      throw err;
    }
  }
}

/** What every mode shares: the layout, the logger, the status file. */
interface DaemonContext {
  layout: VolumeLayout;
  log: Logger;
  startedAt: string;
  recoveredFromCrash: boolean;
}

function statusSnapshot(ctx: DaemonContext, extra: () => Partial<DaemonStatus>) {
  return (state: DaemonStatus['state'], counters: DaemonStatus['counters'] = NO_COUNTERS): DaemonStatus => ({
    pid: process.pid,
    state,
    startedAt: ctx.startedAt,
    updatedAt: new Date().toISOString(),
    recoveredFromCrash: ctx.recoveredFromCrash,
    counters,
    ...extra(),
  });
}

/** A local volume: FUSE is served from the start; the daemon exits when it is unmounted. */
async function runLocal(ctx: DaemonContext, meta: VolumeMetadata): Promise<void> {
  const { layout, log } = ctx;
  const local = await LocalDevice.open(layout.dataFile, meta.size);
  const snapshots = await Snapshots.load({
    dir: layout.snapshotsDir,
    volume: { uuid: meta.uuid, size: meta.size },
    base: local,
    log,
  });
  const served = snapshots.device(local);
  const device = new CountingDevice(served);
  const snapshot = statusSnapshot(ctx, () => ({}));
  const snapshotOps = new SnapshotService({
    layout,
    snapshots,
    log,
    notWritable: () => undefined,
    served: () => served,
  });
  const status = (state: DaemonStatus['state'], counters: DaemonStatus['counters']) =>
    writeJsonAtomic(layout.statusFile, snapshot(state, counters));
  status('starting', device.counters);
  updateMetadata(layout.dir, (m) => ({ ...m, primaryOpen: true }));
  if (ctx.recoveredFromCrash)
    log.warn({ reason: 'previous daemon did not stop cleanly' }, 'recovering volume');

  const fs = new DeviceFilesystem(device);
  // A local volume's control socket serves status and snapshots; the rest is for replicas.
  const control = await serveControl(layout.controlSocket, {
    ...refuseControl(CONTROL_OPS, (op) => `"${op}" is for replicated volumes; ${layout.name} is local`),
    ...snapshotOps.handlers,
    status: async () => snapshot(fs.initialised ? 'serving' : 'starting', device.counters),
  });
  const fd = await mountFuse(layout.fuseDir, `cvserver:${layout.name}`);
  const session = new FuseSession(fd, fs, { readers: READERS, log });
  const ticker = setInterval(() => status(fs.initialised ? 'serving' : 'starting', device.counters), 1000);
  const fuseServed = session.run();
  log.info({ event: 'serving', mount: layout.fuseDir }, 'volume daemon serving');
  // SIGTERM does not unmount: the loop device and ext4 above us must go first (`volume down`).
  process.on('SIGTERM', () =>
    log.warn('SIGTERM ignored: use `cvserver volume down` to stop a volume in order'),
  );
  await fuseServed;
  clearInterval(ticker);
  status('stopping', device.counters);
  await snapshotOps.close();
  control.close();
  rmSync(layout.controlSocket, { force: true });
  await device.flush();
  await snapshots.close();
  await device.close();
  updateMetadata(layout.dir, (m) => ({ ...m, primaryOpen: false }));
  status('stopped', device.counters);
}

/**
 * A replica of a replicated volume: the replica server always listens; FUSE is served only while
 * this node is primary. Commands arrive on the control socket; the daemon exits on `shutdown`.
 */
async function runReplica(
  ctx: DaemonContext,
  meta: VolumeMetadata,
  cfg: ReplicationConfigFile,
): Promise<void> {
  const { layout, log } = ctx;
  const secret = readSecret(cfg.secretFile);
  /** The settings in force: `cfg` as started, plus what `volume adjust` changed since. */
  let running = cfg;
  const store = new MetadataReplicaStore(layout.dir);
  const listen = splitAddress(cfg.listen);
  const diskless = meta.diskState === 'Diskless';
  const local = diskless ? undefined : await LocalDevice.open(layout.dataFile, meta.size);
  const device = local
    ? new ReplicatedDevice(
        local,
        store,
        {
          node: cfg.node,
          volumeUuid: meta.uuid,
          secret,
          peers: cfg.peers.map((p) => ({
            node: p.node,
            ...splitAddress(p.address),
            tiebreaker: p.tiebreaker,
          })),
          quorum: cfg.quorum,
          afterSplitBrain: cfg.afterSplitBrain,
          stateDir: layout.replicationDir,
          resyncRate: resyncRateBytes(cfg),
        },
        log,
      )
    : undefined;
  // Snapshots are the primary's: writes this replica receives from another primary bypass them.
  const snapshots = local
    ? await Snapshots.load({
        dir: layout.snapshotsDir,
        volume: { uuid: meta.uuid, size: meta.size },
        base: local,
        log,
      })
    : undefined;
  const served = device && snapshots ? snapshots.device(device) : device;
  const counting = served ? new CountingDevice(served) : undefined;
  const server = new ReplicaServer({
    node: cfg.node,
    volumeUuid: meta.uuid,
    secret,
    host: listen.host,
    port: listen.port,
    device: local && snapshots ? droppingSnapshots(local, snapshots, log) : local,
    size: meta.size,
    store,
    durableWrites: cfg.durableWrites,
    isPrimary: () => device?.role === 'Primary',
    // What this node wrote alone (split-brain policies) and what a crash left unsure (old primary).
    divergence: device,
    // Strangers reach this port: what they make us log is capped.
    log: rateLimited(log),
  });
  let fuse: { fs: DeviceFilesystem; served: Promise<void> } | undefined;
  /** A running `verify`, for `status` (a whole volume's digests can take minutes). */
  let verifying: { peer: string; doneBytes: number; totalBytes: number; startedAt: string } | undefined;
  let state: DaemonStatus['state'] = 'starting';
  const extra = (): Partial<DaemonStatus> => ({
    role: device?.role ?? 'Secondary',
    replication: {
      node: cfg.node,
      listen: cfg.listen,
      ...(device ? device.status() : { role: 'Secondary', diskState: 'Diskless' }),
      fuseServing: fuse !== undefined,
      ...(verifying ? { verifying } : {}),
      server: server.status(),
    },
  });
  const snapshot = statusSnapshot(ctx, extra);
  const report = () => writeJsonAtomic(layout.statusFile, snapshot(state, counting?.counters));
  await server.listen();
  state = 'serving';
  report();
  const ticker = setInterval(report, 1000);
  log.info({ event: 'listening', listen: cfg.listen, diskless }, 'replica serving');

  /** The FUSE session ends when the device is unmounted: a primary without it demotes itself. */
  const serveFuse = async (): Promise<void> => {
    if (!counting || !device) return;
    const fs = new DeviceFilesystem(counting);
    const fd = await mountFuse(layout.fuseDir, `cvserver:${layout.name}`);
    const session = new FuseSession(fd, fs, { readers: READERS, log });
    const served = session.run().then(async () => {
      fuse = undefined;
      await device.demote();
      log.info({ event: 'demoted' }, 'FUSE device unmounted: now secondary');
      report();
    });
    fuse = { fs, served };
  };

  const demote = async (): Promise<void> => {
    if (fuse) {
      const served = fuse.served;
      try {
        await unmountFuse(layout.fuseDir);
      } catch (err) {
        throw new Error(
          `the device is still in use (${(err as Error).message}); unmount the filesystem and detach the loop device first`,
        );
      }
      await served;
    }
    await device?.demote();
    report();
  };

  let stopping: (() => void) | undefined;
  const stopped = new Promise<void>((resolve) => (stopping = resolve));

  // Role changes one at a time, whoever asks (two CLI calls, a signal).
  const concurrentOps: ControlOp[] = ['status', 'fail-suspended-io', 'adjust', 'snapshot-list'];
  let roleChange: Promise<unknown> = Promise.resolve();
  const serialised = (req: ControlRequest, handle: () => Promise<unknown>): Promise<unknown> => {
    // Status, settings and giving up on suspended I/O must not wait behind a role change stuck on that I/O.
    if (concurrentOps.includes(req.op)) return handle();
    const next = roleChange.then(handle);
    roleChange = next.catch(() => undefined);
    return next;
  };

  const snapshotOps = snapshots
    ? new SnapshotService({
        layout,
        snapshots,
        log,
        notWritable: () =>
          device?.role !== 'Primary' || !fuse
            ? 'snapshots are taken on the primary (this replica is secondary)'
            : undefined,
        served: () => served,
      })
    : undefined;

  const handlers: ControlHandlers = {
    ...(snapshotOps?.handlers ?? refuseControl(SNAPSHOT_OPS, () => 'a diskless tiebreaker has no snapshots')),
    promote: async (req) => {
      if (!device) throw new Error('a diskless tiebreaker cannot become primary');
      if (device.role === 'Primary' && fuse) return { role: 'Primary', epoch: device.status().epoch };
      let epoch = req.epoch ?? device.status().epoch + 1;
      let r = await device.promote(epoch, undefined, req.force, req.absent);
      // Without an explicit epoch, a peer may have taught us a higher one during the attempt.
      if (!r.ok && req.epoch === undefined && device.status().epoch >= epoch) {
        epoch = device.status().epoch + 1;
        r = await device.promote(epoch, undefined, req.force, req.absent);
      }
      if (!r.ok) throw new Error(`cannot become primary: ${r.reason}`);
      try {
        await serveFuse();
      } catch (err) {
        // A primary that cannot serve its device must not stay primary.
        await device.demote();
        throw err;
      }
      log.info({ event: 'promoted', epoch }, 'now primary');
      report();
      return { role: 'Primary', epoch };
    },
    demote: async () => {
      await demote();
      return { role: 'Secondary' };
    },
    verify: async (req) => {
      if (device?.role !== 'Primary') throw new Error('verify runs on the primary');
      const peers = req.peer ? [req.peer] : running.peers.filter((p) => !p.tiebreaker).map((p) => p.node);
      const results = [];
      const startedAt = new Date().toISOString();
      try {
        for (const p of peers) {
          verifying = { peer: p, doneBytes: 0, totalBytes: device.size, startedAt };
          const onProgress = (doneBytes: number, totalBytes: number) => {
            verifying = { peer: p, doneBytes, totalBytes, startedAt };
          };
          results.push(await device.verify(p, { resync: req.resync, onProgress }));
        }
      } finally {
        verifying = undefined;
      }
      return results;
    },
    'resolve-split-brain': async (req) => {
      if (device?.role !== 'Primary')
        throw new Error('run this on the survivor, as primary (`cvserver volume primary` first)');
      return device.resolveSplitBrainKeepLocal(req.peer);
    },
    status: async () => snapshot(state, counting?.counters),
    adjust: async () => {
      const file = replicationConfigPath(layout.dir);
      const wanted = readReplicationConfig(layout.dir);
      if (!wanted) throw new Error(`${file} is missing: restore it (this daemon runs with its old settings)`);
      const plan = planAdjust(running, wanted);
      device?.adjust({
        quorum: wanted.quorum,
        afterSplitBrain: wanted.afterSplitBrain,
        resyncRate: resyncRateBytes(wanted),
      });
      // A diskless tiebreaker has no peers of its own: it only answers the primaries that call it.
      for (const node of plan.peersRemoved) await device?.removePeer(node);
      for (const p of wanted.peers.filter((x) => plan.peersAdded.includes(x.node)))
        device?.addPeer({ node: p.node, ...splitAddress(p.address), tiebreaker: p.tiebreaker });
      const { quorum, afterSplitBrain, resyncRate } = wanted;
      running = { ...running, quorum, afterSplitBrain, resyncRate, peers: peersInForce(running, wanted) };
      if (plan.apply.length + plan.peersAdded.length + plan.peersRemoved.length + plan.atRestart.length > 0)
        log.info(
          {
            event: 'adjusted',
            applied: plan.apply,
            peersAdded: plan.peersAdded,
            peersRemoved: plan.peersRemoved,
            atRestart: plan.atRestart,
          },
          'settings re-read',
        );
      return plan;
    },
    'fail-suspended-io': async () => {
      const suspended = device?.status().quorum.suspendedWrites ?? 0;
      device?.setQuorumPolicy('io-error');
      log.warn({ event: 'fail-suspended-io', suspended }, 'operator: writes waiting for quorum fail now');
      return { failed: suspended };
    },
    shutdown: async () => {
      await demote();
      setImmediate(() => stopping?.());
      return { stopped: true };
    },
  };
  const control = await serveControl(layout.controlSocket, handlers, serialised);
  process.on('SIGTERM', () => {
    if (device?.role === 'Primary')
      log.warn('SIGTERM ignored while primary: use `cvserver volume down` to stop a volume in order');
    else stopping?.();
  });

  await stopped;
  // Demoted and flushed by now: closing connections must not keep a stopped volume's daemon alive.
  setTimeout(() => {
    log.warn('closing took more than 10 s: exiting anyway');
    process.exit(0);
  }, 10_000).unref();
  clearInterval(ticker);
  state = 'stopping';
  report();
  control.close();
  rmSync(layout.controlSocket, { force: true });
  await snapshotOps?.close();
  await snapshots?.close();
  await device?.close();
  await server.close();
  state = 'stopped';
  report();
}

/**
 * The local device as the replica server writes it: the first write that arrives from another
 * primary drops this node's snapshots (they no longer describe what this node's data derives from).
 */
function droppingSnapshots(local: LocalDevice, snapshots: Snapshots, log: Logger): BlockDevice {
  const before = async (): Promise<void> => {
    if (snapshots.names.length === 0) return;
    log.warn(
      { event: 'snapshots-invalidated', snapshots: snapshots.names },
      'receiving writes as a secondary',
    );
    await snapshots.dropAll(
      'this replica receives writes from another primary (snapshots are local to the primary)',
    );
  };
  return {
    size: local.size,
    read: (offset, length) => local.read(offset, length),
    write: async (offset, data) => {
      await before();
      return local.write(offset, data);
    },
    writeDurable: async (offset, data) => {
      await before();
      return local.writeDurable(offset, data);
    },
    flush: () => local.flush(),
    close: () => local.close(),
  };
}

async function main(dir: string): Promise<void> {
  const layout = volumeLayout(basename(dir), dir);
  const log = createLogger('volume-daemon', { volume: layout.name });
  // Each pending /dev/fuse read holds a libuv thread; the spawner sets this before we start.
  if (Number(process.env.UV_THREADPOOL_SIZE ?? 4) < READERS + 4) {
    log.fatal('UV_THREADPOOL_SIZE must be at least readers + 4; refusing to start (deadlock risk)');
    process.exit(2);
  }
  const meta = readMetadata(dir);
  const cfg = readReplicationConfig(dir);
  mkdirSync(layout.runDir, { recursive: true });
  mkdirSync(layout.fuseDir, { recursive: true });
  mkdirSync(layout.replicationDir, { recursive: true });
  writeFileSync(layout.pidFile, `${process.pid}\n`);
  const ctx: DaemonContext = {
    layout,
    log,
    startedAt: new Date().toISOString(),
    recoveredFromCrash: meta.primaryOpen,
  };
  if (cfg) await runReplica(ctx, meta, cfg);
  else await runLocal(ctx, meta);
  rmSync(layout.pidFile, { force: true });
  log.info({ event: 'stopped' }, 'volume daemon stopped');
}

if (import.meta.main) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: daemon.ts VOLUME_DIR\n');
    process.exit(2);
  }
  main(dir).catch((err: unknown) => {
    process.stderr.write(`volume daemon: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
