import type { Command } from 'commander';
import { UserError } from '../lib/errors.ts';
import { formatSize, parseSizeOrThrow } from '../lib/size.ts';
import {
  createVolume,
  destroyVolume,
  listVolumes,
  type VolumeStatus,
  volumeAdjust,
  volumeDown,
  volumeLog,
  volumeResolveSplitBrain,
  volumeSecondary,
  volumeStatus,
  volumeUp,
  volumeVerify,
} from '../volume/lifecycle.ts';
import { parsePeerFlag, type ReplicationConfigFile } from '../volume/replication-config.ts';
import { emit, table } from './output.ts';
import { registerSnapshotCommands } from './volume-snapshot.ts';

const collect = (v: string, acc: string[]) => [...acc, v];

interface CreateFlags {
  size: string;
  uuid?: string;
  blank?: boolean;
  diskless?: boolean;
  node?: string;
  listen?: string;
  peer: string[];
  tiebreaker?: string;
  secretFile?: string;
  quorum?: string;
  afterSplitBrain?: string;
  resyncRate?: string;
  /** commander's negation of --no-durable-writes. */
  durableWrites: boolean;
  json?: boolean;
}

/** The replication options of `volume create`, as the config file they become (validated there). */
function replicationFromFlags(o: CreateFlags): ReplicationConfigFile | undefined {
  const given = o.node || o.listen || o.peer.length || o.tiebreaker || o.secretFile;
  if (!given) return undefined;
  const missing = [
    ['--node', o.node],
    ['--listen', o.listen],
    ['--secret-file', o.secretFile],
  ].filter(([, v]) => !v);
  if (missing.length)
    throw new UserError(`a replicated volume also needs ${missing.map(([f]) => f).join(', ')}`);
  if (!o.peer.length && !o.tiebreaker) throw new UserError('a replicated volume needs at least one --peer');
  return {
    node: o.node!,
    listen: o.listen!,
    secretFile: o.secretFile!,
    peers: [
      ...o.peer.map((p) => ({ ...parsePeerFlag('--peer', p), tiebreaker: false })),
      ...(o.tiebreaker ? [{ ...parsePeerFlag('--tiebreaker', o.tiebreaker), tiebreaker: true }] : []),
    ],
    quorum: (o.quorum ?? 'suspend-io') as ReplicationConfigFile['quorum'],
    afterSplitBrain: (o.afterSplitBrain ?? 'disconnect') as ReplicationConfigFile['afterSplitBrain'],
    durableWrites: o.durableWrites,
    resyncRate: o.resyncRate ?? 0,
  };
}

function parseEpoch(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UserError(`--epoch "${v}": expected a positive integer`);
  return n;
}

function describeReplication(s: VolumeStatus): string[] {
  const r = s.daemon?.replication;
  const warning = s.configError
    ? [`  WARNING: ${s.configError} (a running daemon keeps the settings it has)`]
    : [];
  if (!r) {
    if (!s.replication) return warning;
    const lines = [`  replica ${s.replication.node} (${s.replication.listen}), daemon not running; peers:`];
    for (const p of s.replication.peers)
      lines.push(`    ${p.node} ${p.address}${p.tiebreaker ? ' (tiebreaker)' : ''}`);
    return lines;
  }
  // The daemon's own view: replication.yaml may have changed (or broken) since it started.
  const lines = [`  replica ${r.node} listening on ${r.listen}`, ...warning];
  lines[0] += `: ${r.role}, disk ${r.diskState}`;
  if (r.role === 'Secondary') {
    // A secondary does not dial out: what matters is which primary feeds it.
    const conns = r.server.connections;
    lines.push(
      conns.length
        ? `    connected from: ${conns.map((c) => `${c.peer} (${formatSize(c.bytesReceived)} received)`).join(', ')}`
        : '    no primary connected',
    );
    if (r.server.closedForBadInput || r.server.refused)
      lines.push(
        `    refused ${r.server.refused} writes, closed ${r.server.closedForBadInput} connections for bad input`,
      );
    return lines;
  }
  if ('afterSplitBrain' in r && r.afterSplitBrain)
    lines.push(
      `    after split-brain: ${r.afterSplitBrain}; resync rate: ${r.resyncRate ? `${formatSize(r.resyncRate)}/s` : 'unlimited'}`,
    );
  if (r.quorum) {
    const q = r.quorum;
    lines.push(
      `    quorum ${q.hasQuorum ? 'yes' : 'NO'} (${q.reachable}/${q.voters} voters, ${q.needed} needed, policy ${q.policy})` +
        (q.suspendedWrites ? `, ${q.suspendedWrites} writes suspended` : '') +
        ('fenced' in r && r.fenced ? ', FENCED by a newer epoch' : ''),
    );
  }
  if (r.verifying) {
    const v = r.verifying;
    lines.push(
      `    verifying against ${v.peer}: ${Math.floor((100 * v.doneBytes) / v.totalBytes)}% of ${formatSize(v.totalBytes)}`,
    );
  }
  for (const p of r.peers ?? []) {
    let line = `    peer ${p.node} ${p.address}${p.tiebreaker ? ' (tiebreaker)' : ''}: ${p.connection}`;
    if (p.diskState) line += `, disk ${p.diskState}`;
    if (p.role) line += `, ${p.role}`;
    if (p.durableWrites === false) line += ', flushes on fsync (durableWrites off)';
    if (p.outOfSyncBytes) line += `, ${formatSize(p.outOfSyncBytes)} out of sync`;
    if (p.resync) {
      const pct = p.resync.totalBytes ? (100 * p.resync.doneBytes) / p.resync.totalBytes : 100;
      line += `, resync ${pct.toFixed(1)}% at ${formatSize(p.resync.bytesPerSecond)}/s`;
      if (p.resync.etaSeconds !== undefined) line += `, ETA ${Math.ceil(p.resync.etaSeconds)} s`;
    }
    if (p.lastError && p.connection !== 'Connected') line += ` (${p.lastError})`;
    lines.push(line);
  }
  const srv = r.server;
  if (srv.closedForBadInput || srv.refused)
    lines.push(
      `    refused ${srv.refused} writes, closed ${srv.closedForBadInput} connections for bad input`,
    );
  return lines;
}

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
  lines.push(...describeReplication(s));
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
    .description(
      'create a volume (a sparse data file and its metadata); with --node/--listen/--peer, one replica of a replicated volume',
    )
    .requiredOption('--size <size>', 'size, e.g. 2G or 512M (at least 16M)')
    .option(
      '--uuid <uuid>',
      "join a replicated volume: the first replica's UUID (starts Inconsistent: full sync)",
    )
    .option('--blank', 'with --uuid: every replica is new and blank, no initial sync needed')
    .option('--diskless', 'a diskless tiebreaker: stores no data, only votes for quorum')
    .option('--node <name>', "this replica's node name, as its peers know it")
    .option('--listen <host:port>', 'where this replica listens for the primary')
    .option('--peer <node=host:port>', 'another replica (repeatable)', collect, [])
    .option('--tiebreaker <node=host:port>', 'the diskless tiebreaker')
    .option('--secret-file <file>', "the cluster's shared secret (mode 600, at least 16 bytes)")
    .option('--quorum <policy>', 'on quorum loss: suspend-io (default), io-error, or off')
    .option(
      '--after-split-brain <policy>',
      'disconnect (default), discard-zero-changes, discard-younger-primary, discard-least-changes',
    )
    .option('--resync-rate <rate>', 'resync bandwidth cap per second, e.g. 100M (default unlimited)')
    .option(
      '--no-durable-writes',
      'as a secondary, fdatasync on FLUSH instead of writing each block with O_DSYNC (rotating disks)',
    )
    .option('--json', 'machine-readable output')
    .action((name: string, o: CreateFlags) => {
      if (o.blank && !o.uuid) throw new UserError('--blank only makes sense with --uuid');
      const meta = createVolume(name, parseSizeOrThrow(o.size, '--size'), {
        uuid: o.uuid,
        blank: o.blank,
        diskless: o.diskless,
        replication: replicationFromFlags(o),
      });
      emit(
        !!o.json,
        meta,
        () => `created volume ${name} (${formatSize(meta.size)}, uuid ${meta.uuid}, disk ${meta.diskState})`,
      );
    });

  volume
    .command('up <name>')
    .description(
      'start the volume daemon, attach a loop device, optionally make a filesystem and mount it (idempotent)',
    )
    .option('--mkfs <fstype>', 'make this filesystem (ext4 or xfs) if the device has none')
    .option('--mount <dir>', 'mount the filesystem on this directory')
    .option('--primary', 'replicated volume: also become primary (as `volume primary`)')
    .option('--epoch <n>', 'with --primary: the promotion epoch (default: one above the highest seen)')
    .option('--json', 'machine-readable output')
    .action(
      async (
        name: string,
        o: { mkfs?: string; mount?: string; primary?: boolean; epoch?: string; json?: boolean },
      ) => {
        const primary = o.primary ? { epoch: parseEpoch(o.epoch) } : undefined;
        const s = await volumeUp(name, { mkfs: o.mkfs, mountDir: o.mount, primary }, progress(!!o.json));
        emit(!!o.json, s, () => describe(s));
      },
    );

  volume
    .command('primary <name>')
    .description('replicated volume: become primary (needs quorum and up-to-date data), attach, mount')
    .option('--epoch <n>', 'promotion epoch, a fencing token (default: one above the highest seen)')
    .option(
      '--force',
      "keep this node's data although a reachable peer holds newer or diverged data, or a newer generation was witnessed (choosing a split-brain survivor, or accepting the loss of what the other replica acknowledged)",
    )
    .option('--mkfs <fstype>', 'make this filesystem (ext4 or xfs) if the device has none')
    .option('--mount <dir>', 'mount the filesystem on this directory')
    .option('--json', 'machine-readable output')
    .action(
      async (
        name: string,
        o: { epoch?: string; force?: boolean; mkfs?: string; mount?: string; json?: boolean },
      ) => {
        const primary = { epoch: parseEpoch(o.epoch), force: o.force };
        const s = await volumeUp(name, { mkfs: o.mkfs, mountDir: o.mount, primary }, progress(!!o.json));
        emit(!!o.json, s, () => describe(s));
      },
    );

  volume
    .command('secondary <name>')
    .description('replicated volume: unmount, detach and become secondary')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      const s = await volumeSecondary(name, progress(!!o.json));
      emit(!!o.json, s, () => describe(s));
    });

  volume
    .command('verify <name>')
    .description('on the primary: compare replicas by block digests (only digests travel)')
    .option('--peer <node>', 'only this peer (default: every data peer)')
    .option('--resync', 'resync the mismatching ranges from this primary')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { peer?: string; resync?: boolean; json?: boolean }) => {
      const results = await volumeVerify(name, { peer: o.peer, resync: !!o.resync }, progress(!!o.json));
      emit(!!o.json, results, () =>
        results
          .map((r) => {
            const bad = r.mismatches.reduce((n, m) => n + m.length, 0);
            const head = `peer ${r.peer}: compared ${formatSize(r.bytesCompared)}, ${r.mismatches.length ? `${r.mismatches.length} mismatching ranges (${formatSize(bad)})${o.resync ? ', resynced' : ''}` : 'identical'}`;
            return [
              head,
              ...r.mismatches.slice(0, 20).map((m) => `  offset ${m.offset} length ${m.length}`),
            ].join('\n');
          })
          .join('\n'),
      );
      if (!o.resync && results.some((r) => r.mismatches.length > 0)) process.exitCode = 4;
    });

  volume
    .command('resolve-split-brain <name>')
    .description(
      "on the chosen survivor, as primary: keep this node's data; the peer's diverging blocks are saved to a file, then overwritten",
    )
    .requiredOption('--peer <node>', 'the peer whose changes are discarded')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { peer: string; json?: boolean }) => {
      const r = await volumeResolveSplitBrain(name, o.peer);
      emit(
        !!o.json,
        r,
        () =>
          `split-brain with ${o.peer} resolved: its ${formatSize(r.bytesSaved)} of diverging blocks saved to ${r.savedTo}`,
      );
    });

  volume
    .command('adjust <name>')
    .description(
      "change a replicated volume's settings in replication.yaml and apply them to its running daemon (after a hand edit: no options)",
    )
    .option('--quorum <policy>', 'on quorum loss: suspend-io, io-error, or off')
    .option(
      '--after-split-brain <policy>',
      'disconnect, discard-zero-changes, discard-younger-primary, discard-least-changes',
    )
    .option('--resync-rate <rate>', 'resync bandwidth cap per second, e.g. 100M; 0 = unlimited')
    .option('--durable-writes', 'as a secondary, write each block with O_DSYNC (applies at the next up)')
    .option('--no-durable-writes', 'as a secondary, fdatasync on FLUSH instead (applies at the next up)')
    .option(
      '--add-peer <node=host:port>',
      'a node joins the volume (repeatable); a running daemon connects to it at once',
      collect,
      [],
    )
    .option('--remove-peer <node>', 'a node leaves the volume (repeatable); applied at once', collect, [])
    .option('--json', 'machine-readable output')
    .action(
      async (
        name: string,
        o: {
          quorum?: string;
          afterSplitBrain?: string;
          resyncRate?: string;
          durableWrites?: boolean;
          addPeer: string[];
          removePeer: string[];
          json?: boolean;
        },
      ) => {
        const r = await volumeAdjust(name, {
          quorum: o.quorum as ReplicationConfigFile['quorum'] | undefined,
          afterSplitBrain: o.afterSplitBrain as ReplicationConfigFile['afterSplitBrain'] | undefined,
          resyncRate: o.resyncRate,
          durableWrites: o.durableWrites,
          addPeers: o.addPeer.map((v) => parsePeerFlag('--add-peer', v)),
          removePeers: o.removePeer,
        });
        emit(!!o.json, r, () => {
          const lines = [r.saved ? 'replication.yaml updated' : 'replication.yaml unchanged'];
          if (!r.running) lines.push(`daemon not running here: \`cvserver volume up ${name}\` reads it`);
          const show = (setting: string, v: string) =>
            setting !== 'resyncRate' ? v : v === '0' ? 'unlimited' : `${formatSize(Number(v))}/s`;
          for (const c of r.apply)
            lines.push(
              `  ${c.setting}: ${show(c.setting, c.from)} -> ${show(c.setting, c.to)} (in force now)`,
            );
          for (const node of r.peersAdded) lines.push(`  peer ${node} joined (connecting now)`);
          for (const node of r.peersRemoved)
            lines.push(`  peer ${node} left (disconnected, its bitmap forgotten)`);
          if (r.atRestart.length)
            lines.push(
              `  ${r.atRestart.join(', ')}: changed in the file, in force after \`cvserver volume down ${name}\` and \`up ${name}\``,
            );
          if (
            r.running &&
            !r.apply.length &&
            !r.peersAdded.length &&
            !r.peersRemoved.length &&
            !r.atRestart.length
          )
            lines.push('the daemon already runs with these settings');
          return lines.join('\n');
        });
      },
    );

  volume
    .command('down <name>')
    .description('unmount, detach the loop device and stop the daemon, in that order (idempotent)')
    .option(
      '--force',
      'replicated primary without quorum: fail the writes waiting for quorum (EIO to the filesystem) instead of waiting',
    )
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { force?: boolean; json?: boolean }) => {
      const s = await volumeDown(name, progress(!!o.json), { force: o.force });
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
    .command('logs <name>')
    .description("the volume daemon's log: role changes, peer connections, resyncs, refused input")
    .option('-n, --lines <n>', 'how many of the last lines', '50')
    .option('--json', 'one JSON object per line, as logged')
    .action((name: string, o: { lines: string; json?: boolean }) => {
      const n = Number(o.lines);
      if (!Number.isInteger(n) || n <= 0)
        throw new UserError(`--lines "${o.lines}": expected a positive integer`);
      for (const line of volumeLog(name, n)) {
        if (o.json) {
          console.log(line);
          continue;
        }
        try {
          const {
            time,
            level,
            msg,
            component: _c,
            pid: _p,
            volume: _v,
            hostname: _h,
            ...rest
          } = JSON.parse(line);
          const extra = Object.entries(rest)
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join(' ');
          const lvl = level >= 50 ? 'ERROR' : level >= 40 ? 'WARN' : 'INFO';
          console.log(`${time} ${lvl} ${msg}${extra ? ` ${extra}` : ''}`);
        } catch {
          console.log(line);
        }
      }
    });

  volume
    .command('destroy <name>')
    .description('delete a volume that is down on this node (its data on this node is lost)')
    .requiredOption('--yes', 'confirm: the data of this replica is deleted')
    .option('--json', 'machine-readable output')
    .action(async (name: string, o: { json?: boolean }) => {
      await destroyVolume(name);
      emit(!!o.json, { destroyed: name }, () => `destroyed volume ${name}`);
    });

  registerSnapshotCommands(volume);

  volume
    .command('list')
    .description('list volumes')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const all = await Promise.all(listVolumes().map((n) => volumeStatus(n)));
      emit(!!o.json, all, () =>
        table(
          ['NAME', 'SIZE', 'HEALTH', 'ROLE', 'DISK', 'DEVICE', 'MOUNTED ON'],
          all.map((s) => [
            s.name,
            formatSize(s.size),
            s.health,
            s.replication ? (s.daemon?.role ?? '-') : 'local',
            s.diskState,
            s.loop ?? '-',
            s.mounts.join(',') || '-',
          ]),
        ),
      );
    });
}
