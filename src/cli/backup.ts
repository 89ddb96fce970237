import type { Command } from 'commander';
import {
  forgetBackups,
  initRepository,
  listBackups,
  restoreAs,
  restorePath,
  runBackup,
  verifyBackups,
} from '../backup/backup.ts';
import type { Repository } from '../backup/restic.ts';
import { type ClusterSpec, loadClusterConfig } from '../cluster/config.ts';
import { UserError } from '../lib/errors.ts';
import { formatSize } from '../lib/size.ts';
import { emit, table } from './output.ts';

const DEFAULT_CONFIG = '/etc/cvserver/cluster.yaml';

/** The cluster file: --config, else CVSERVER_CLUSTER_CONFIG, else the default path. */
function config(o: { config?: string }): { spec: ClusterSpec; file: string } {
  const file = o.config ?? process.env.CVSERVER_CLUSTER_CONFIG ?? DEFAULT_CONFIG;
  return { spec: loadClusterConfig(file), file };
}

function repository(o: { config?: string }): Repository {
  const { spec, file } = config(o);
  if (!spec.backup)
    throw new UserError(`${file}: no backup section (repository, password_file): see docs/backup.md`);
  return { repository: spec.backup.repository, passwordFile: spec.backup.password_file };
}

const progress = (json: boolean) => (msg: string) => {
  if (!json) process.stderr.write(`  ${msg}\n`);
};

export function registerBackupCommands(program: Command): void {
  const backup = program
    .command('backup')
    .description("backups of vservers with restic, into the cluster's repository (cluster.yaml: backup)");
  const withConfig = (c: Command) =>
    c.option('--config <file>', `cluster.yaml (default $CVSERVER_CLUSTER_CONFIG or ${DEFAULT_CONFIG})`);

  withConfig(backup.command('init'))
    .description('create the restic repository named in cluster.yaml')
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      const repo = repository(o);
      await initRepository(repo);
      emit(!!o.json, { initialised: repo.repository }, () => `backup repository ${repo.repository} created`);
    });

  withConfig(backup.command('run <vserver>'))
    .description('back up a vserver now: snapshot, mount read-only, restic backup, release (with progress)')
    .option('--time <time>', 'record the backup at this time ("2024-01-31 02:00:00"; tests of retention)')
    .option('--json', 'machine-readable output')
    .action(async (vserver: string, o: { config?: string; time?: string; json?: boolean }) => {
      const r = await runBackup(vserver, repository(o), { progress: progress(!!o.json), time: o.time });
      emit(
        !!o.json,
        r,
        () =>
          `backup ${r.snapshotId} of ${vserver}: ${r.filesNew} new, ${r.filesChanged} changed, ${r.filesUnmodified} unchanged files; ${formatSize(r.bytesProcessed)} read, ${formatSize(r.bytesAdded)} added in ${r.seconds} s (frozen ${r.frozenMs} ms)`,
      );
    });

  withConfig(backup.command('list [vserver]'))
    .description('backups in the repository, of one vserver or all')
    .option('--json', 'machine-readable output')
    .action(async (vserver: string | undefined, o: { config?: string; json?: boolean }) => {
      const all = await listBackups(repository(o), vserver);
      emit(!!o.json, all, () =>
        all.length
          ? table(
              ['ID', 'TIME', 'VSERVER', 'VOLUME'],
              all.map((s) => [s.shortId, s.time, s.vserver, s.volume]),
            )
          : 'no backups',
      );
    });

  withConfig(backup.command('verify'))
    .description("check the repository's integrity (restic check); exit 4 when it has errors")
    .option('--read-data-subset <n%>', 'also read and verify this share of the data, e.g. 10%')
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; readDataSubset?: string; json?: boolean }) => {
      const r = await verifyBackups(repository(o), o.readDataSubset);
      emit(!!o.json, { ok: true, ...r }, () => `backup repository verified: no errors\n${r.output}`);
    });

  withConfig(backup.command('forget <vserver>'))
    .description("apply the vserver's retention (cluster.yaml vservers.NAME.backup.keep): forget and prune")
    .option('--no-prune', 'forget only (prune later)')
    .option('--json', 'machine-readable output')
    .action(async (vserver: string, o: { config?: string; prune: boolean; json?: boolean }) => {
      const { spec, file } = config(o);
      const keep = spec.backups[vserver]?.keep;
      if (!keep) throw new UserError(`${file}: vservers.${vserver}.backup.keep is not set`);
      const r = await forgetBackups(repository(o), vserver, keep, o.prune);
      emit(!!o.json, r, () => `${vserver}: kept ${r.kept.length} backups, removed ${r.removed.length}`);
    });

  withConfig(backup.command('restore <vserver> <snapshot>'))
    .description(
      'restore one path to a host directory (--path, --target), or a whole vserver on a new volume (--as)',
    )
    .option('--path <path>', 'a file or directory inside the vserver, e.g. /etc/hosts')
    .option('--target <dir>', 'with --path: the host directory to restore it into')
    .option('--as <name>', 'restore the whole vserver as a new vserver on a new local volume')
    .option('--rootfs <dir>', 'with --as: where to mount its volume (default STATE/rootfs/NAME)')
    .option('--no-start', 'with --as: do not start it')
    .option('--json', 'machine-readable output')
    .action(
      async (
        vserver: string,
        snapshot: string,
        o: {
          config?: string;
          path?: string;
          target?: string;
          as?: string;
          rootfs?: string;
          start: boolean;
          json?: boolean;
        },
      ) => {
        const repo = repository(o);
        if (o.as && (o.path || o.target))
          throw new UserError('--as restores a whole vserver: no --path/--target');
        if (o.as) {
          const r = await restoreAs(repo, vserver, snapshot, o.as, {
            rootfs: o.rootfs,
            start: o.start,
            progress: progress(!!o.json),
          });
          emit(
            !!o.json,
            r,
            () =>
              `restored ${vserver} as ${r.vserver} (volume ${r.volume} on ${r.rootfs})${r.started ? ', started' : ''}`,
          );
          return;
        }
        if (!o.path || !o.target) throw new UserError('give --path and --target, or --as NEWNAME');
        const r = await restorePath(repo, vserver, snapshot, o.path, o.target);
        emit(!!o.json, r, () => `restored ${o.path} to ${r.restored}`);
      },
    );
}
