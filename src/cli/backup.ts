import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { BackupNowAnswer } from '../agent/api.ts';
import {
  applyRetention,
  backupClusterState,
  CLUSTER_TAG,
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
import { askAgent, operatorName } from './agent-client.ts';
import { emit, table } from './output.ts';

const DEFAULT_CONFIG = '/etc/cvserver/cluster.yaml';

/** The cluster file: --config, else CVSERVER_CLUSTER_CONFIG, else the default path. */
export function config(o: { config?: string }): { spec: ClusterSpec; file: string } {
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

  backup
    .command('now <vserver>')
    .description(
      'ask the node that runs the vserver to back it up now (through the agent; as POST /api/vservers/NAME/backup)',
    )
    .option('--json', 'machine-readable output')
    .action(async (vserver: string, o: { json?: boolean }) => {
      const r = (await askAgent({ op: 'backup-now', vserver, by: operatorName() })) as BackupNowAnswer;
      emit(
        !!o.json,
        r,
        () => `backup of ${vserver} requested: ${r.node} runs it now (see cvserver events, cvserver status)`,
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

  withConfig(backup.command('cluster'))
    .description(
      "back up the cluster's own state: an etcd snapshot (this node's member, its client certificate) and cluster.yaml, tagged cluster",
    )
    .option('--node <name>', "this node's name in cluster.yaml (its certificate)", hostname())
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; node: string; json?: boolean }) => {
      const { spec, file } = config(o);
      if (!spec.nodes.some((n) => n.name === o.node))
        throw new UserError(`--node ${o.node}: not a node of ${file} (its certificate is needed)`);
      const r = await backupClusterState(repository(o), {
        endpoint: spec.etcd.endpoints[0] ?? `https://127.0.0.1:${spec.etcd.client_port}`,
        ca: join(spec.tls_dir, 'ca.crt'),
        cert: join(spec.tls_dir, `${o.node}.crt`),
        key: join(spec.tls_dir, `${o.node}.key`),
        clusterYaml: readFileSync(file, 'utf8'),
        cluster: spec.cluster,
      });
      emit(
        !!o.json,
        r,
        () =>
          `backup ${r.snapshotId} of the cluster's state (etcd snapshot, cluster.yaml): ${formatSize(r.bytesProcessed)} read, ${formatSize(r.bytesAdded)} added in ${r.seconds} s`,
      );
    });

  withConfig(backup.command('prune'))
    .description(
      "apply every retention (each vserver's keep, backup.cluster_keep), then prune the repository once",
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { config?: string; json?: boolean }) => {
      const { spec } = config(o);
      const jobs = [
        ...Object.entries(spec.backups).map(([v, b]) => ({
          tag: `vserver=${v}`,
          what: `vserver ${v}`,
          keep: b.keep,
        })),
        ...(spec.backup
          ? [{ tag: CLUSTER_TAG, what: "the cluster's state", keep: spec.backup.cluster_keep }]
          : []),
      ];
      const r = await applyRetention(repository(o), jobs);
      emit(!!o.json, r, () => `kept ${r.kept} backups, removed ${r.removed}, pruned in ${r.seconds} s`);
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
