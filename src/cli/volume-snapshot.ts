import type { Command } from 'commander';
import { formatSize } from '../lib/size.ts';
import {
  createSnapshot,
  deleteSnapshot,
  listSnapshots,
  mountSnapshot,
  unmountSnapshot,
} from '../volume/snapshot/commands.ts';
import { emit, table } from './output.ts';

const progress = (json: boolean) => (msg: string) => {
  if (!json) process.stderr.write(`  ${msg}\n`);
};

/** `cvserver volume snapshot create|list|delete|mount|umount`. */
export function registerSnapshotCommands(volume: Command): void {
  const snap = volume
    .command('snapshot')
    .description('point-in-time snapshots of a volume (copy-on-write in its daemon; on the primary)');

  snap
    .command('create <name> <snapshot>')
    .description('take a snapshot: freeze the filesystem for a moment, mark the point, thaw')
    .option('--json', 'machine-readable output')
    .action(async (name: string, snapshot: string, o: { json?: boolean }) => {
      const r = await createSnapshot(name, snapshot);
      emit(
        !!o.json,
        r,
        () =>
          `snapshot ${snapshot} of ${name} taken${r.frozen.length ? ` (${r.frozen.join(', ')} frozen ${r.frozenMs} ms)` : ''}`,
      );
    });

  snap
    .command('list <name>')
    .description("a volume's snapshots with the space they take")
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const all = await listSnapshots(name);
      emit(!!o.json, all, () =>
        all.length
          ? table(
              ['SNAPSHOT', 'CREATED', 'COPIED', 'SPACE', 'DEVICE'],
              all.map((s) => [
                s.name,
                s.createdAt,
                `${s.chunksCopied} chunks (${formatSize(s.bytesCopied)})`,
                formatSize(s.cowBytes),
                s.deviceFile ?? '-',
              ]),
            )
          : `volume ${name} has no snapshots`,
      );
    });

  snap
    .command('delete <name> <snapshot>')
    .description('delete a snapshot and free its space')
    .option('--json', 'machine-readable output')
    .action(async (name: string, snapshot: string, o: { json?: boolean }) => {
      await deleteSnapshot(name, snapshot);
      emit(!!o.json, { deleted: snapshot }, () => `deleted snapshot ${snapshot} of ${name}`);
    });

  snap
    .command('mount <name> <snapshot> <dir>')
    .description('expose a snapshot as a read-only block device and mount it read-only on DIR')
    .option('--json', 'machine-readable output')
    .action(async (name: string, snapshot: string, dir: string, o: { json?: boolean }) => {
      const r = await mountSnapshot(name, snapshot, dir, progress(!!o.json));
      emit(!!o.json, r, () => `snapshot ${snapshot} of ${name}: ${r.device} mounted read-only on ${r.dir}`);
    });

  snap
    .command('umount <name> <snapshot>')
    .description("unmount a snapshot's filesystem and release its device")
    .option('--json', 'machine-readable output')
    .action(async (name: string, snapshot: string, o: { json?: boolean }) => {
      await unmountSnapshot(name, snapshot, progress(!!o.json));
      emit(!!o.json, { released: snapshot }, () => `snapshot ${snapshot} of ${name} released`);
    });
}
