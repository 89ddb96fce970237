/**
 * The volume daemon's snapshot operations (control socket) and the read-only FUSE files of exposed
 * snapshots. Shared by the local and the replicated daemon.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { mountFuse, unmountFuse } from '../../fuse/mount.ts';
import { FuseSession } from '../../fuse/session.ts';
import type { Logger } from '../../lib/log.ts';
import type { BlockDevice } from '../block-device.ts';
import type { ControlHandlers, SnapshotOp } from '../control.ts';
import { DeviceFilesystem } from '../device-filesystem.ts';
import { DEVICE_FILE_NAME, snapshotFuseDir, type VolumeLayout } from '../layout.ts';
import type { Snapshots } from './snapshots.ts';

/** /dev/fuse readers per exposed snapshot (each holds a libuv thread: see the daemon's READERS). */
const SNAPSHOT_READERS = 2;
/** Exposed at once at most: their readers plus the volume's must stay under UV_THREADPOOL_SIZE. */
const MAX_EXPOSED = 4;

export interface SnapshotServiceOptions {
  layout: VolumeLayout;
  snapshots: Snapshots;
  log: Logger;
  /** Why this replica cannot take or roll back a snapshot now (not primary), or undefined. */
  notWritable: () => string | undefined;
  /** The volume's device as the primary serves it (copy-on-write included): rollback writes here. */
  served: () => BlockDevice | undefined;
}

export class SnapshotService {
  private readonly o: SnapshotServiceOptions;
  private readonly exposed = new Map<string, Promise<void>>();

  constructor(o: SnapshotServiceOptions) {
    this.o = o;
  }

  /** The snapshot rows of the control table (the daemon serves them as they are). */
  readonly handlers: Pick<ControlHandlers, SnapshotOp> = {
    'snapshot-create': async (req) => {
      this.mustBeWritable('cannot take a snapshot here');
      const t0 = performance.now();
      const s = await this.o.snapshots.create(req.name);
      return { ...s, tookMs: Math.round((performance.now() - t0) * 10) / 10 };
    },
    'snapshot-prepare': async (req) => {
      this.mustBeWritable('cannot take a snapshot here');
      await this.o.snapshots.prepare(req.name);
      return { prepared: req.name };
    },
    'snapshot-list': () =>
      this.o.snapshots.list((n) => (this.exposed.has(n) ? this.deviceFile(n) : undefined)),
    'snapshot-delete': async (req) => {
      if (this.exposed.has(req.name))
        throw new Error(`snapshot "${req.name}" is mounted: \`volume snapshot umount\` it first`);
      await this.o.snapshots.delete(req.name);
      return { deleted: req.name };
    },
    'snapshot-expose': async (req) => ({ deviceFile: await this.expose(req.name) }),
    'snapshot-unexpose': async (req) => {
      await this.unexpose(req.name);
      return { released: req.name };
    },
    'snapshot-rollback': async (req) => {
      const why = this.o.notWritable();
      const target = this.o.served();
      if (why || !target) throw new Error(`cannot roll back here: ${why ?? 'the volume is not served'}`);
      if (!this.o.snapshots.has(req.name)) throw new Error(`no snapshot "${req.name}" on this volume`);
      return this.o.snapshots.rollback(req.name, target);
    },
  };

  /** Releases every exposed snapshot (daemon stopping). */
  async close(): Promise<void> {
    for (const name of [...this.exposed.keys()]) await this.unexpose(name).catch(() => undefined);
  }

  private mustBeWritable(what: string): void {
    const why = this.o.notWritable();
    if (why) throw new Error(`${what}: ${why}`);
  }

  private deviceFile(name: string): string {
    return join(snapshotFuseDir(this.o.layout, name), DEVICE_FILE_NAME);
  }

  private async expose(name: string): Promise<string> {
    if (this.exposed.has(name)) return this.deviceFile(name);
    if (this.exposed.size >= MAX_EXPOSED)
      throw new Error(`${MAX_EXPOSED} snapshots are mounted already: unmount one first`);
    const device = this.o.snapshots.reader(name);
    const dir = snapshotFuseDir(this.o.layout, name);
    mkdirSync(dir, { recursive: true });
    const fd = await mountFuse(dir, `cvserver:${this.o.layout.name}@${name}`);
    const session = new FuseSession(fd, new DeviceFilesystem(device), {
      readers: SNAPSHOT_READERS,
      log: this.o.log,
    });
    const served = session.run().finally(() => this.exposed.delete(name));
    this.exposed.set(name, served);
    this.o.log.info({ event: 'snapshot-exposed', snapshot: name }, 'snapshot served read-only');
    return this.deviceFile(name);
  }

  private async unexpose(name: string): Promise<void> {
    const served = this.exposed.get(name);
    if (!served) return;
    try {
      await unmountFuse(snapshotFuseDir(this.o.layout, name));
    } catch (err) {
      throw new Error(
        `snapshot "${name}" is still in use (${(err as Error).message}); unmount its filesystem and detach its loop device first`,
      );
    }
    await served;
    this.o.log.info({ event: 'snapshot-released', snapshot: name }, 'snapshot no longer served');
  }
}
