/**
 * Snapshots of a vserver on this node: its root filesystem is a cvserver volume mounted on
 * `rootfs`; `snapshot` takes a volume snapshot of it, `rollback` stops the vserver, writes the
 * snapshot's blocks back through the (replicated) volume and starts it again.
 */
import { UserError } from '../lib/errors.ts';
import { listVolumes, type Progress, volumeStatus } from '../volume/lifecycle.ts';
import {
  type CreatedSnapshot,
  createSnapshot,
  listSnapshots,
  rollbackToSnapshot,
} from '../volume/snapshot/commands.ts';
import { mustDefinition, startVserver, stopVserver, vserverStatus } from './manager.ts';
import { recordEvent } from './store.ts';

/** The volume mounted on the vserver's root filesystem here; a clear error when there is none. */
export async function volumeOfVserver(name: string): Promise<string> {
  const def = mustDefinition(name);
  for (const v of listVolumes()) {
    if ((await volumeStatus(v)).mounts.includes(def.rootfs)) return v;
  }
  throw new UserError(
    `vserver ${name}: its rootfs ${def.rootfs} is not a cvserver volume mounted on this node (snapshots need one: \`cvserver volume up VOLUME --mount ${def.rootfs}\`, as primary on a replicated volume)`,
  );
}

export async function snapshotVserver(
  name: string,
  snapshot: string,
): Promise<CreatedSnapshot & { volume: string }> {
  const volume = await volumeOfVserver(name);
  const r = await createSnapshot(volume, snapshot);
  recordEvent(name, 'snapshot', `snapshot ${snapshot} of volume ${volume} taken (frozen ${r.frozenMs} ms)`);
  return { ...r, volume };
}

export async function rollbackVserver(
  name: string,
  snapshot: string,
  progress: Progress = () => {},
): Promise<{ volume: string; bytes: number; restarted: boolean }> {
  const volume = await volumeOfVserver(name);
  // Checked before anything stops: a typo must not take the vserver down.
  if (!(await listSnapshots(volume)).some((s) => s.name === snapshot))
    throw new UserError(`vserver ${name}: volume ${volume} has no snapshot "${snapshot}"`);
  const wasRunning = (await vserverStatus(name)).state === 'running';
  if (wasRunning) {
    progress(`stopping vserver ${name}`);
    await stopVserver(name, `rollback to snapshot ${snapshot}`);
  }
  const r = await rollbackToSnapshot(volume, snapshot, progress);
  recordEvent(
    name,
    'rollback',
    `volume ${volume} rolled back to snapshot ${snapshot} (${r.bytes} bytes written back)`,
  );
  if (wasRunning) {
    progress(`starting vserver ${name}`);
    await startVserver(name);
  }
  return { volume, bytes: r.bytes, restarted: wasRunning };
}
