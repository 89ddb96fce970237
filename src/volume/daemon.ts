/**
 * The volume daemon: serves one volume's data file as `fuse/device` over our FUSE server.
 * Started detached by `cvserver volume up`; exits when its FUSE mount is unmounted (`volume down`).
 *   node src/volume/daemon.ts <volume-dir>
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { DeviceFilesystem } from '../fuse/device-filesystem.ts';
import { mountFuse } from '../fuse/mount.ts';
import { FuseSession } from '../fuse/session.ts';
import { writeJsonAtomic } from '../lib/json-file.ts';
import { createLogger } from '../lib/log.ts';
import type { BlockDevice } from './block-device.ts';
import { type DaemonStatus, volumeLayout } from './layout.ts';
import { LocalDevice } from './local-device.ts';
import { readMetadata, updateMetadata } from './metadata.ts';

/** Concurrent /dev/fuse reads; CVSERVER_FUSE_READERS overrides it for tuning. */
const READERS = Number(process.env.CVSERVER_FUSE_READERS ?? 8);

/** Counts requests for `status`, around the real device. */
class CountingDevice implements BlockDevice {
  readonly counters: DaemonStatus['counters'] = {
    reads: 0,
    writes: 0,
    fsyncs: 0,
    bytesRead: 0,
    bytesWritten: 0,
    errors: 0,
  };
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

async function main(dir: string): Promise<void> {
  const layout = volumeLayout(basename(dir), dir);
  const log = createLogger('volume-daemon', { volume: layout.name });
  // Each pending /dev/fuse read holds a libuv thread; the spawner sets this before we start.
  if (Number(process.env.UV_THREADPOOL_SIZE ?? 4) < READERS + 4) {
    log.fatal('UV_THREADPOOL_SIZE must be at least readers + 4; refusing to start (deadlock risk)');
    process.exit(2);
  }
  const meta = readMetadata(dir);
  const recoveredFromCrash = meta.primaryOpen;
  mkdirSync(layout.runDir, { recursive: true });
  mkdirSync(layout.fuseDir, { recursive: true });
  writeFileSync(layout.pidFile, `${process.pid}\n`);
  const device = new CountingDevice(await LocalDevice.open(layout.dataFile, meta.size));
  const startedAt = new Date().toISOString();
  const status = (state: DaemonStatus['state']): void =>
    writeJsonAtomic(layout.statusFile, {
      pid: process.pid,
      state,
      startedAt,
      updatedAt: new Date().toISOString(),
      recoveredFromCrash,
      counters: device.counters,
    } satisfies DaemonStatus);
  status('starting');
  updateMetadata(dir, (m) => ({ ...m, primaryOpen: true }));
  if (recoveredFromCrash) log.warn({ reason: 'previous daemon did not stop cleanly' }, 'recovering volume');

  const fs = new DeviceFilesystem(device);
  const fd = await mountFuse(layout.fuseDir, `cvserver:${layout.name}`);
  const session = new FuseSession(fd, fs, { readers: READERS, log });
  const ticker = setInterval(() => status(fs.initialised ? 'serving' : 'starting'), 1000);
  const served = session.run();
  log.info({ event: 'serving', mount: layout.fuseDir }, 'volume daemon serving');
  // SIGTERM does not unmount: the loop device and ext4 above us must go first (`volume down`).
  process.on('SIGTERM', () =>
    log.warn('SIGTERM ignored: use `cvserver volume down` to stop a volume in order'),
  );
  await served;
  clearInterval(ticker);
  status('stopping');
  await device.flush();
  await device.close();
  updateMetadata(dir, (m) => ({ ...m, primaryOpen: false }));
  status('stopped');
  rmSync(layout.pidFile, { force: true });
  log.info({ event: 'stopped', reason: 'FUSE unmounted' }, 'volume daemon stopped');
}

const dir = process.argv[2];
if (!dir) {
  process.stderr.write('usage: daemon.ts VOLUME_DIR\n');
  process.exit(2);
}
main(dir).catch((err: unknown) => {
  process.stderr.write(`volume daemon: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
