/**
 * Backups of vservers with restic (docs/backup.md): a run takes a snapshot of the vserver's volume,
 * mounts it read-only, backs it up (with the vserver's definition) tagged with the vserver and
 * the volume's UUID, and releases the snapshot whatever happens. List, verify (restic check),
 * retention (forget --prune), restore of one path, restore of a whole vserver under a new name.
 */
import { spawn } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { errorMessage, UserError } from '../lib/errors.ts';
import { stateDir } from '../lib/paths.ts';
import { formatSize } from '../lib/size.ts';
import { createVolume, destroyVolume, volumeDown, volumeStatus, volumeUp } from '../volume/lifecycle.ts';
import {
  createSnapshot,
  deleteSnapshot,
  mountSnapshot,
  unmountSnapshot,
} from '../volume/snapshot/commands.ts';
import type { VserverDefinition } from '../vserver/definition.ts';
import { createVserver, startVserver } from '../vserver/manager.ts';
import { volumeOfVserver } from '../vserver/snapshot.ts';
import { readDefinition } from '../vserver/store.ts';
import {
  BACKGROUND_PRIORITY,
  BACKUP_HOST,
  checkPasswordFile,
  describeStatus,
  mustRestic,
  parseResticLine,
  type Repository,
  type ResticSummary,
  tagsFor,
  tagValue,
} from './restic.ts';

export interface Keep {
  last?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
}

/** Where a vserver's snapshot is mounted and its definition staged: the same paths every run (restic finds the parent by them). */
function backupPaths(vserver: string): { mnt: string; meta: string } {
  const root = join(stateDir(), 'backup');
  return { mnt: join(root, 'mnt', vserver), meta: join(root, 'meta', vserver) };
}

const DEFINITION_FILE = 'vserver.json';

/** Fails early, before any snapshot: the password file's mode, then the repository (reachable, right password). */
async function openRepository(repo: Repository): Promise<void> {
  checkPasswordFile(repo.passwordFile);
  await mustRestic(repo, ['cat', 'config'], 'opening the backup repository');
}

export async function initRepository(repo: Repository): Promise<void> {
  checkPasswordFile(repo.passwordFile);
  await mustRestic(repo, ['init'], 'creating the backup repository');
}

export interface BackupResult {
  vserver: string;
  volume: string;
  snapshotId: string;
  filesNew: number;
  filesChanged: number;
  filesUnmodified: number;
  bytesProcessed: number;
  /** What this backup added to the repository (deduplicated, compressed). */
  bytesAdded: number;
  seconds: number;
  /** How long the vserver's filesystem was frozen for the volume snapshot. */
  frozenMs: number;
}

/** Appends a run's outcome to this node's backup history (`STATE/backup/history.jsonl`). */
function record(entry: Record<string, unknown>): void {
  const dir = join(stateDir(), 'backup');
  mkdirSync(dir, { recursive: true });
  appendFileSync(
    join(dir, 'history.jsonl'),
    `${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`,
  );
}

export async function runBackup(
  vserver: string,
  repo: Repository,
  o: { progress?: (line: string) => void; time?: string } = {},
): Promise<BackupResult> {
  const progress = o.progress ?? (() => {});
  const t0 = performance.now();
  try {
    await openRepository(repo);
    const def = readDefinition(vserver);
    if (!def) throw new UserError(`vserver ${vserver} does not exist on this node`);
    const volume = await volumeOfVserver(vserver);
    const vol = await volumeStatus(volume);
    const { mnt, meta } = backupPaths(vserver);
    mkdirSync(mnt, { recursive: true });
    mkdirSync(meta, { recursive: true });
    // Rewritten only when it changed: restic then sees it unchanged (no new metadata per run).
    const defText = `${JSON.stringify(def, null, 2)}\n`;
    const defFile = join(meta, DEFINITION_FILE);
    if (!existsSync(defFile) || readFileSync(defFile, 'utf8') !== defText) writeFileSync(defFile, defText);
    const snapshot = `backup-${Date.now()}`;
    progress(`taking snapshot ${snapshot} of volume ${volume}`);
    const snap = await createSnapshot(volume, snapshot);
    let summary: ResticSummary | undefined;
    try {
      await mountSnapshot(volume, snapshot, mnt);
      const tags = tagsFor(vserver, vol.uuid, vol.size).flatMap((t) => ['--tag', t]);
      const args = [
        'backup',
        '--json',
        '--host',
        BACKUP_HOST,
        ...tags,
        ...(o.time ? ['--time', o.time] : []),
        mnt,
        meta,
      ];
      let last = 0;
      await mustRestic(
        repo,
        args,
        `restic backup of ${vserver}`,
        (line) => {
          const m = parseResticLine(line);
          if (m?.message_type === 'summary') summary = m;
          else if (m?.message_type === 'status' && performance.now() - last > 1000) {
            last = performance.now();
            progress(describeStatus(m, formatSize));
          }
        },
        BACKGROUND_PRIORITY,
      );
    } finally {
      // Released whatever happened: no snapshot is left behind.
      await unmountSnapshot(volume, snapshot).catch(() => undefined);
      await deleteSnapshot(volume, snapshot);
    }
    if (!summary) throw new UserError(`restic backup of ${vserver} printed no summary`);
    const result: BackupResult = {
      vserver,
      volume,
      snapshotId: summary.snapshot_id,
      filesNew: summary.files_new,
      filesChanged: summary.files_changed,
      filesUnmodified: summary.files_unmodified,
      bytesProcessed: summary.total_bytes_processed,
      bytesAdded: summary.data_added,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
      frozenMs: snap.frozenMs,
    };
    record({ ok: true, ...result });
    return result;
  } catch (err) {
    record({ vserver, ok: false, error: errorMessage(err) });
    throw err;
  }
}

export interface BackupSnapshot {
  id: string;
  shortId: string;
  time: string;
  vserver: string;
  volume: string;
  /** The volume's size when backed up (a restore --as makes a volume this big). */
  volumeSize: number;
  paths: string[];
}

interface ResticSnapshot {
  id: string;
  short_id: string;
  time: string;
  paths: string[];
  tags?: string[];
}

export async function listBackups(repo: Repository, vserver?: string): Promise<BackupSnapshot[]> {
  await openRepository(repo);
  const args = [
    'snapshots',
    '--json',
    '--host',
    BACKUP_HOST,
    ...(vserver ? ['--tag', `vserver=${vserver}`] : []),
  ];
  const out = JSON.parse((await mustRestic(repo, args, 'listing backups')).stdout || '[]') as
    | ResticSnapshot[]
    | null;
  return (out ?? [])
    .filter((s) => tagValue(s.tags, 'vserver'))
    .map((s) => ({
      id: s.id,
      shortId: s.short_id,
      time: s.time,
      vserver: tagValue(s.tags, 'vserver')!,
      volume: tagValue(s.tags, 'volume') ?? '',
      volumeSize: Number(tagValue(s.tags, 'size') ?? 0),
      paths: s.paths,
    }))
    .sort((a, b) => a.time.localeCompare(b.time));
}

/** restic check; with `readDataSubset` ("10%") it also reads and verifies that share of the data. */
export async function verifyBackups(repo: Repository, readDataSubset?: string): Promise<{ output: string }> {
  if (readDataSubset !== undefined && !/^(100|[1-9]?\d)(\.\d+)?%$|^\d+\/\d+$/.test(readDataSubset))
    throw new UserError(`--read-data-subset "${readDataSubset}": expected a percentage like 10% (or n/t)`);
  await openRepository(repo);
  const args = ['check', ...(readDataSubset ? [`--read-data-subset=${readDataSubset}`] : [])];
  const r = await mustRestic(repo, args, 'backup verify (restic check)').catch((err: unknown) => {
    throw new UserError(`backup verify: the repository has errors: ${errorMessage(err)}`, 4);
  });
  return { output: `${r.stdout}${r.stderr}`.trim() };
}

/** Applies a vserver's retention: which backups stay (restic forget --prune), by the vserver's tag. */
export async function forgetBackups(
  repo: Repository,
  vserver: string,
  keep: Keep,
  prune = true,
): Promise<{ kept: string[]; removed: string[] }> {
  await openRepository(repo);
  return forgetTagged(repo, `vserver=${vserver}`, `vserver ${vserver}`, keep, prune);
}

async function forgetTagged(
  repo: Repository,
  tag: string,
  what: string,
  keep: Keep,
  prune: boolean,
): Promise<{ kept: string[]; removed: string[] }> {
  const flags = Object.entries(keep)
    .filter(([, n]) => n !== undefined && n > 0)
    .flatMap(([k, n]) => [`--keep-${k}`, String(n)]);
  if (flags.length === 0) throw new UserError(`${what}: a retention needs at least one keep count above 0`);
  const args = [
    'forget',
    '--json',
    '--host',
    BACKUP_HOST,
    '--tag',
    tag,
    ...flags,
    ...(prune ? ['--prune'] : []),
  ];
  const r = await mustRestic(repo, args, `forget of ${what}'s backups`);
  // The JSON array comes first; --prune prints plain lines after it.
  const json = r.stdout.split('\n').find((l) => l.startsWith('['));
  const groups = JSON.parse(json ?? '[]') as Array<{
    keep?: ResticSnapshot[];
    remove?: ResticSnapshot[];
  }> | null;
  return {
    kept: (groups ?? []).flatMap((g) => (g.keep ?? []).map((s) => s.id)),
    removed: (groups ?? []).flatMap((g) => (g.remove ?? []).map((s) => s.id)),
  };
}

async function findBackup(repo: Repository, vserver: string, id: string): Promise<BackupSnapshot> {
  const all = await listBackups(repo, vserver);
  const found = id === 'latest' ? all[all.length - 1] : all.find((s) => s.id.startsWith(id));
  if (!found)
    throw new UserError(
      `no backup "${id}" of vserver ${vserver} in ${repo.repository} (see \`cvserver backup list ${vserver}\`)`,
    );
  return found;
}

/**
 * Restores one file or directory of a vserver's backup to `target` on the host (as
 * `target/<basename of path>`); `path` is as seen inside the vserver (/etc/hosts).
 */
export async function restorePath(
  repo: Repository,
  vserver: string,
  id: string,
  path: string,
  target: string,
): Promise<{ restored: string }> {
  if (!path.startsWith('/'))
    throw new UserError(`--path "${path}": expected an absolute path inside the vserver`);
  if (!existsSync(target)) throw new UserError(`--target ${target}: directory does not exist`);
  const snap = await findBackup(repo, vserver, id);
  const mnt = snap.paths.find((p) => p.includes(`/backup/mnt/${vserver}`)) ?? snap.paths[0]!;
  const dest = join(target, basename(path));
  if (existsSync(dest)) throw new UserError(`${dest} already exists: choose another --target`);
  const staging = join(target, `.cvserver-restore-${process.pid}`);
  try {
    const inside = join(mnt, path);
    await mustRestic(repo, ['restore', snap.id, '--target', staging, '--include', inside], 'restic restore');
    const got = join(staging, inside);
    if (!existsSync(got)) throw new UserError(`backup ${snap.shortId} of ${vserver} has no ${path}`);
    renameSync(got, dest);
    return { restored: dest };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * Restores a whole vserver from a backup under a new name, on a new local volume (the size it was
 * backed up with), also on a node that never saw it: volume, filesystem, files, definition, start.
 */
export async function restoreAs(
  repo: Repository,
  vserver: string,
  id: string,
  newName: string,
  o: { rootfs?: string; start?: boolean; progress?: (m: string) => void } = {},
): Promise<{ vserver: string; volume: string; rootfs: string; started: boolean }> {
  const progress = o.progress ?? (() => {});
  const snap = await findBackup(repo, vserver, id);
  const size = snap.volumeSize;
  if (!Number.isInteger(size) || size <= 0)
    throw new UserError(`backup ${snap.shortId} has no size tag: cannot size the new volume`);
  if (readDefinition(newName)) throw new UserError(`a vserver named "${newName}" already exists here`);
  const rootfs = o.rootfs ?? join(stateDir(), 'rootfs', newName);
  if (existsSync(rootfs) && readdirSync(rootfs).length > 0)
    throw new UserError(`--rootfs ${rootfs} is not empty`);
  mkdirSync(rootfs, { recursive: true });
  progress(`creating volume ${newName} (${formatSize(size)})`);
  createVolume(newName, size);
  try {
    await volumeUp(newName, { mkfs: 'ext4', mountDir: rootfs }, progress);
    rmSync(join(rootfs, 'lost+found'), { recursive: true, force: true });
    const staging = join(rootfs, `.cvserver-restore-${process.pid}`);
    progress(`restoring backup ${snap.shortId} of ${vserver}`);
    await mustRestic(repo, ['restore', snap.id, '--target', staging], 'restic restore');
    const mnt = snap.paths.find((p) => p.includes(`/backup/mnt/${vserver}`)) ?? snap.paths[0]!;
    const meta = snap.paths.find((p) => p.includes(`/backup/meta/${vserver}`));
    const from = join(staging, mnt);
    for (const entry of readdirSync(from)) renameSync(join(from, entry), join(rootfs, entry));
    const saved = meta ? join(staging, meta, DEFINITION_FILE) : undefined;
    if (!saved || !existsSync(saved))
      throw new UserError(`backup ${snap.shortId} holds no vserver definition`);
    const def = JSON.parse(readFileSync(saved, 'utf8')) as VserverDefinition;
    rmSync(staging, { recursive: true, force: true });
    createVserver({ ...def, name: newName, rootfs }, undefined);
    if (o.start !== false) {
      progress(`starting vserver ${newName}`);
      await startVserver(newName);
    }
    return { vserver: newName, volume: newName, rootfs, started: o.start !== false };
  } catch (err) {
    // Nothing half-made stays: the new volume goes (the backup is untouched).
    await volumeDown(newName).catch(() => undefined);
    await destroyVolume(newName).catch(() => undefined);
    throw err;
  }
}

/**
 * The scheduled retention (backup.prune_schedule): every vserver's `keep` and the cluster's
 * `cluster_keep`, each a forget without prune, then one `restic prune` (it locks the repository
 * exclusively and rewrites packs: once, not once per vserver).
 */
export async function applyRetention(
  repo: Repository,
  jobs: { tag: string; what: string; keep: Keep }[],
): Promise<{ kept: number; removed: number; seconds: number }> {
  const t0 = performance.now();
  await openRepository(repo);
  let kept = 0;
  let removed = 0;
  for (const j of jobs) {
    const r = await forgetTagged(repo, j.tag, j.what, j.keep, false);
    kept += r.kept.length;
    removed += r.removed.length;
  }
  await mustRestic(repo, ['prune'], 'restic prune');
  return { kept, removed, seconds: Math.round((performance.now() - t0) / 100) / 10 };
}

/** The tag of the cluster's own backups (an etcd snapshot and the applied cluster.yaml). */
export const CLUSTER_TAG = 'cluster';

export interface ClusterBackupResult {
  snapshotId: string;
  bytesProcessed: number;
  bytesAdded: number;
  seconds: number;
}

/**
 * The cluster's own state into the repository, tagged `cluster`: an etcd snapshot taken from
 * `endpoint` with the node's client certificate (`etcdctl snapshot save`) and the applied cluster.yaml,
 * staged in `STATE/backup/cluster/` (the same paths every time: restic finds the parent).
 */
export async function backupClusterState(
  repo: Repository,
  o: { endpoint: string; ca: string; cert: string; key: string; clusterYaml: string; cluster: string },
): Promise<ClusterBackupResult> {
  const t0 = performance.now();
  try {
    await openRepository(repo);
    const dir = join(stateDir(), 'backup', 'cluster');
    mkdirSync(dir, { recursive: true });
    const db = join(dir, 'etcd.db');
    rmSync(db, { force: true });
    const saved = await runCommand('etcdctl', [
      `--endpoints=${o.endpoint}`,
      `--cacert=${o.ca}`,
      `--cert=${o.cert}`,
      `--key=${o.key}`,
      '--command-timeout=60s',
      'snapshot',
      'save',
      db,
    ]);
    if (saved.code !== 0)
      throw new UserError(
        `etcd snapshot from ${o.endpoint} failed: ${saved.stderr.trim().split('\n').pop()}`,
      );
    rmSync(`${db}.part`, { force: true });
    writeFileSync(join(dir, 'cluster.yaml'), o.clusterYaml);
    let summary: ResticSummary | undefined;
    const args = [
      'backup',
      '--json',
      '--host',
      BACKUP_HOST,
      '--tag',
      CLUSTER_TAG,
      '--tag',
      `name=${o.cluster}`,
      dir,
    ];
    await mustRestic(repo, args, "restic backup of the cluster's state", (line) => {
      const m = parseResticLine(line);
      if (m?.message_type === 'summary') summary = m;
    });
    if (!summary) throw new UserError("restic backup of the cluster's state printed no summary");
    const result = {
      snapshotId: summary.snapshot_id,
      bytesProcessed: summary.total_bytes_processed,
      bytesAdded: summary.data_added,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    };
    record({ job: 'cluster', ok: true, ...result });
    return result;
  } catch (err) {
    record({ job: 'cluster', ok: false, error: errorMessage(err) });
    throw err;
  }
}

function runCommand(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err) => resolve({ code: -1, stderr: `cannot run ${cmd}: ${err.message}` }));
    child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
  });
}
