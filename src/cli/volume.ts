import type { Command } from 'commander';
import { formatSize, parseSizeOrThrow } from '../lib/size.ts';
import {
  createVolume,
  listVolumes,
  type VolumeStatus,
  volumeDown,
  volumeStatus,
  volumeUp,
} from '../volume/lifecycle.ts';
import { emit, table } from './output.ts';

function describe(s: VolumeStatus): string {
  const lines = [
    `volume ${s.name}: ${s.health} (${s.reason})`,
    `  uuid ${s.uuid}, size ${formatSize(s.size)}, disk ${s.diskState}, epoch ${s.epoch}`,
  ];
  if (s.pid)
    lines.push(`  daemon pid ${s.pid}${s.daemon ? `, ${s.daemon.state} since ${s.daemon.startedAt}` : ''}`);
  if (s.daemon) {
    const c = s.daemon.counters;
    lines.push(`  requests: ${c.reads} reads, ${c.writes} writes, ${c.fsyncs} fsyncs, ${c.errors} errors`);
  }
  if (s.loop)
    lines.push(`  block device ${s.loop}${s.mounts.length ? ` mounted on ${s.mounts.join(', ')}` : ''}`);
  return lines.join('\n');
}

const progress = (json: boolean) => (msg: string) => {
  if (!json) process.stderr.write(`  ${msg}\n`);
};

export function registerVolumeCommands(program: Command): void {
  const volume = program
    .command('volume')
    .description('replicated block volumes: a data file served through FUSE, a loop device, a filesystem');

  volume
    .command('create <name>')
    .description('create a volume (a sparse data file and its metadata)')
    .requiredOption('--size <size>', 'size, e.g. 2G or 512M (at least 16M)')
    .option('--json', 'machine-readable output')
    .action((name: string, o: { size: string; json?: boolean }) => {
      const meta = createVolume(name, parseSizeOrThrow(o.size, '--size'));
      emit(!!o.json, meta, () => `created volume ${name} (${formatSize(meta.size)}, uuid ${meta.uuid})`);
    });

  volume
    .command('up <name>')
    .description(
      'start the volume daemon, attach a loop device, optionally make a filesystem and mount it (idempotent)',
    )
    .option('--mkfs <fstype>', 'make this filesystem (ext4 or xfs) if the device has none')
    .option('--mount <dir>', 'mount the filesystem on this directory')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { mkfs?: string; mount?: string; json?: boolean }) => {
      const s = await volumeUp(name, { mkfs: o.mkfs, mountDir: o.mount }, progress(!!o.json));
      emit(!!o.json, s, () => describe(s));
    });

  volume
    .command('down <name>')
    .description('unmount, detach the loop device and stop the daemon, in that order (idempotent)')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const s = await volumeDown(name, progress(!!o.json));
      emit(!!o.json, s, () => describe(s));
    });

  volume
    .command('status [name]')
    .description('health of one volume, or of all')
    .option('--json', 'machine-readable output')
    .action(async (name: string | undefined, o: { json?: boolean }) => {
      const all = await Promise.all((name ? [name] : listVolumes()).map((n) => volumeStatus(n)));
      emit(!!o.json, name ? all[0] : all, () => (all.length ? all.map(describe).join('\n') : 'no volumes'));
      if (all.some((s) => s.health === 'failed')) process.exitCode = 3;
    });

  volume
    .command('list')
    .description('list volumes')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const all = await Promise.all(listVolumes().map((n) => volumeStatus(n)));
      emit(!!o.json, all, () =>
        table(
          ['NAME', 'SIZE', 'HEALTH', 'DISK', 'DEVICE', 'MOUNTED ON'],
          all.map((s) => [
            s.name,
            formatSize(s.size),
            s.health,
            s.diskState,
            s.loop ?? '-',
            s.mounts.join(',') || '-',
          ]),
        ),
      );
    });
}
