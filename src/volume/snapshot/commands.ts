/**
 * The snapshot commands on this node (what `cvserver volume snapshot ...` and the vserver and
 * backup commands call): freeze the filesystem around taking one, expose one read-only and mount
 * it, release it, roll the volume back to one.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage, UserError } from '../../lib/errors.ts';
import { run } from '../../lib/exec.ts';
import { type ControlReply, callControl, decodeControlReply } from '../control.ts';
import { type VolumeLayout, volumeLayout } from '../layout.ts';
import {
  daemonPid,
  execute,
  loopsOf,
  observe,
  type Progress,
  requireVolume,
  withLock,
} from '../lifecycle.ts';
import { releaseSnapshot } from '../plan.ts';
import { checkSnapshotName } from './format.ts';
import { prepareFreeze } from './freezer.ts';
import type { SnapshotListing } from './snapshots.ts';

const noop: Progress = () => {};

function mustName(snapshot: string): void {
  const bad = checkSnapshotName(snapshot);
  if (bad) throw new UserError(bad);
}

function mustUp(name: string): VolumeLayout {
  const { layout } = requireVolume(name);
  if (daemonPid(layout) === undefined)
    throw new UserError(`volume "${name}" is not up here (run \`cvserver volume up ${name}\`)`);
  return layout;
}

export type CreatedSnapshot = ControlReply<'snapshot-create'> & {
  /** How long the filesystem was frozen (0 when nothing was mounted). */
  frozenMs: number;
  /** Of that, the FIFREEZE calls themselves (they write what is left dirty), when the helper could time it. */
  freezeMs?: number;
  frozen: string[];
};

/**
 * Takes a snapshot: freezes every filesystem mounted on the volume (FIFREEZE: it flushes them and
 * holds new writes), has the daemon mark the point, thaws. One helper process freezes, sends the
 * daemon the mark request itself and thaws on its reply (freezer.ts): no process starts inside the
 * frozen window, and only the helper and the daemon run in it. The filesystems are thawed whatever
 * happens, also when this process dies.
 */
export async function createSnapshot(name: string, snapshot: string): Promise<CreatedSnapshot> {
  mustName(snapshot);
  const l = mustUp(name);
  const o = await observe(l);
  const dirs = o.fsMounts.map((m) => m.dir);
  // Flushed first, outside the freeze: the freeze then has little left to write (writers wait less).
  for (const dir of dirs) await run('sync', ['-f', dir], { timeoutMs: 600_000 });
  // The snapshot's files made ahead, so the daemon's part inside the freeze is a rename (an older
  // daemon refuses the call: its create then makes them).
  await callControl(l.controlSocket, { op: 'snapshot-prepare', name: snapshot }).catch(() => undefined);
  const request = { op: 'snapshot-create' as const, name: snapshot };
  if (dirs.length === 0)
    return { ...(await callControl(l.controlSocket, request, 30_000)), frozenMs: 0, frozen: [] };
  const helper = await prepareFreeze(dirs, 30);
  const t0 = performance.now();
  const marked = await helper.mark(l.controlSocket, JSON.stringify(request)).catch((err: unknown) => {
    throw new UserError(
      `${errorMessage(err)} (if ${dirs.join(', ')} stayed frozen: run \`fsfreeze -u DIR\` now)`,
    );
  });
  const r = decodeControlReply('snapshot-create', marked.reply);
  // Without Time::HiRes the helper cannot time the window: our round trip bounds it.
  const frozenMs = marked.frozenMs ?? performance.now() - t0;
  const r1 = (x: number) => Math.round(x * 10) / 10;
  return {
    ...r,
    frozenMs: r1(frozenMs),
    ...(marked.freezeMs !== undefined ? { freezeMs: r1(marked.freezeMs) } : {}),
    frozen: dirs,
  };
}

export async function listSnapshots(name: string): Promise<SnapshotListing[]> {
  return callControl(mustUp(name).controlSocket, { op: 'snapshot-list' });
}

/** Deletes a snapshot; with the daemon down, its files are removed directly. */
export async function deleteSnapshot(name: string, snapshot: string): Promise<void> {
  mustName(snapshot);
  const { layout } = requireVolume(name);
  if (daemonPid(layout) !== undefined) {
    await callControl(layout.controlSocket, { op: 'snapshot-delete', name: snapshot });
    return;
  }
  const dir = join(layout.snapshotsDir, snapshot);
  if (!existsSync(dir)) throw new UserError(`no snapshot "${snapshot}" on volume ${name}`);
  rmSync(dir, { recursive: true, force: true });
}

/** Exposes a snapshot as a read-only block device and mounts it read-only (ext4 without journal replay). */
export async function mountSnapshot(
  name: string,
  snapshot: string,
  dir: string,
  progress: Progress = noop,
): Promise<{ device: string; dir: string }> {
  mustName(snapshot);
  if (!existsSync(dir)) throw new UserError(`${dir}: mount point does not exist`);
  const l = mustUp(name);
  return withLock(l, async () => {
    const { deviceFile } = await callControl(l.controlSocket, { op: 'snapshot-expose', name: snapshot });
    let loop = (await loopsOf(deviceFile))[0];
    try {
      if (!loop) {
        progress(`attaching a read-only loop device to snapshot ${snapshot}`);
        loop = (
          await run('losetup', ['--find', '--show', '--read-only', '--direct-io=on', deviceFile])
        ).stdout.trim();
      }
      progress(`mounting ${loop} read-only on ${dir}`);
      // noload: the journal is not replayed (a frozen filesystem's is clean; and the device is read-only).
      await run('mount', ['-o', 'ro,noload', loop, dir]);
      return { device: loop, dir };
    } catch (err) {
      await unmountSnapshot(name, snapshot).catch(() => undefined);
      throw err;
    }
  }).catch((err: unknown) => {
    throw err instanceof UserError ? err : new UserError((err as Error).message);
  });
}

/** Unmounts a snapshot's filesystem, detaches its loop device, stops serving it. */
export async function unmountSnapshot(
  name: string,
  snapshot: string,
  progress: Progress = noop,
): Promise<void> {
  mustName(snapshot);
  const l = volumeLayout(name);
  const o = await observe(l);
  const d = o.snapshotDevices?.find((s) => s.snapshot === snapshot);
  if (!d) return;
  for (const step of releaseSnapshot(d)) await execute(l, step, progress);
}

/**
 * Rolls the volume back to a snapshot: releases the filesystem and loop device above it (the
 * caller stopped what used them), has the daemon write the snapshot's chunks back through the
 * volume (replicated to every peer on a replicated one), then attaches and mounts again where it was.
 */
export async function rollbackToSnapshot(
  name: string,
  snapshot: string,
  progress: Progress = noop,
): Promise<ControlReply<'snapshot-rollback'> & { remounted: string[] }> {
  mustName(snapshot);
  const l = mustUp(name);
  return withLock(l, async () => {
    const o = await observe(l);
    const dirs = o.fsMounts.map((m) => m.dir);
    for (const m of o.fsMounts) {
      progress(`unmounting ${m.dir}`);
      await run('umount', [m.dir]).catch((err: Error) => {
        throw new UserError(`cannot unmount ${m.dir} for the rollback (still in use?): ${err.message}`);
      });
    }
    for (const loop of o.loops) await execute(l, { kind: 'detach-loop', loop }, progress);
    try {
      progress(`writing back the blocks of snapshot ${snapshot}`);
      return {
        ...(await callControl(l.controlSocket, { op: 'snapshot-rollback', name: snapshot }, 3_600_000)),
        remounted: dirs,
      };
    } finally {
      if (o.loops.length > 0 || dirs.length > 0) await execute(l, { kind: 'attach-loop' }, progress);
      for (const dir of dirs) await execute(l, { kind: 'mount-fs', dir }, progress);
    }
  });
}
