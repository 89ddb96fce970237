import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { Agent } from '../agent/agent.ts';
import type { ApplyResult } from '../agent/api.ts';
import { type MeshReport, matrixRows } from '../agent/mesh/view.ts';
import type { EventRecord } from '../agent/records.ts';
import type { ClusterStatus } from '../agent/status.ts';
import { formatVolumes, VOLUME_COLUMNS, type VolumesAnswer } from '../agent/volumes.ts';
import { loadClusterConfig } from '../cluster/config.ts';
import { UserError } from '../lib/errors.ts';
import { stateDir } from '../lib/paths.ts';
import { formatSize } from '../lib/size.ts';
import { askAgent as ask, operatorName } from './agent-client.ts';
import { registerGuardCommand } from './agent-guard.ts';
import { registerAgentInstallCommands } from './agent-install.ts';
import { emit, table } from './output.ts';

/** `cvserver agent` (the node agent), and the commands that talk to it: status, migrate, apply, events. */
export function registerAgentCommands(program: Command): void {
  const agent = program
    .command('agent')
    .description(
      "run this node's agent: etcd member, lease, fencing, the node's vservers, the manager when elected",
    )
    .requiredOption('--config <file>', 'cluster.yaml (nodes, etcd, timing, credentials)')
    .option('--node <name>', "this node's name in cluster.yaml", hostname())
    .option(
      '--initial-cluster-state <state>',
      'existing: this node joins a running cluster (after `cvserver node add` on one of its nodes); new: it is one of the nodes that start the cluster',
      'new',
    )
    .action(async (o: { config: string; node: string; initialClusterState: string }) => {
      if (o.initialClusterState !== 'new' && o.initialClusterState !== 'existing')
        throw new UserError(
          `--initial-cluster-state: expected new or existing, got "${o.initialClusterState}"`,
        );
      const a = new Agent({
        configFile: resolve(o.config),
        node: o.node,
        stateDir: stateDir(),
        join: o.initialClusterState === 'existing',
      });
      const stop = () => {
        a.log.info({ event: 'agent-stop' }, 'stopping (the guard keeps fencing on the last deadline)');
        void a.stop().then(() => process.exit(0));
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
      await a.run();
    });
  registerGuardCommand(agent);
  registerAgentInstallCommands(agent);

  program
    .command('status')
    .description('the cluster as this node sees it: nodes, etcd members, manager, vservers')
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const s = (await ask({ op: 'status' })) as ClusterStatus;
      emit(!!o.json, s, () => formatStatus(s));
    });

  program
    .command('migrate')
    .description(
      'move a vserver to another node (planned: stopped first, then started there; no acknowledged write lost)',
    )
    .argument('<vserver>')
    .argument('<node>')
    .option('--no-wait', 'return once the request is stored')
    .option('--timeout <seconds>', 'how long to wait for the vserver to be healthy on the node', '120')
    .option('--json', 'machine-readable output')
    .action(async (vserver: string, node: string, o: { wait: boolean; timeout: string; json?: boolean }) => {
      const before = ((await ask({ op: 'status', brief: true })) as ClusterStatus).vservers.find(
        (v) => v.name === vserver,
      );
      const { id } = (await ask({ op: 'migrate', vserver, node, by: operatorName() })) as { id: string };
      if (!o.wait)
        return emit(!!o.json, { requested: id }, () => `migration of ${vserver} to ${node} requested`);
      const began = Date.now();
      const limit = Number(o.timeout) * 1000;
      let last = '';
      let polls = 0;
      for (;;) {
        const s = (await ask({ op: 'status', brief: true })) as ClusterStatus;
        const v = s.vservers.find((x) => x.name === vserver);
        const where = v ? `${v.status} on ${v.node ?? '-'} (epoch ${v.epoch})` : 'unknown';
        if (!o.json && where !== last)
          process.stderr.write(`${((Date.now() - began) / 1000).toFixed(1)}s ${vserver}: ${where}\n`);
        last = where;
        if (v && v.node === node && v.status === 'healthy' && v.epoch > (before?.epoch ?? 0))
          return emit(
            !!o.json,
            { vserver, node, epoch: v.epoch, seconds: (Date.now() - began) / 1000 },
            () =>
              `${vserver} runs on ${node} (epoch ${v.epoch}) after ${((Date.now() - began) / 1000).toFixed(1)} s`,
          );
        // The manager's refusal is in the cluster's log: looked for every second, not every poll.
        if (++polls % 10 === 0) {
          const rejected = await findRejection(vserver, node, began);
          if (rejected) throw new UserError(rejected);
        }
        if (Date.now() - began > limit)
          throw new UserError(
            `${vserver} is not healthy on ${node} after ${o.timeout} s (now: ${where}); see cvserver events`,
          );
        await new Promise((r) => setTimeout(r, 100));
      }
    });

  program
    .command('apply')
    .description('validate cluster.yaml and store it in the cluster (vservers added are placed and started)')
    .argument('<file>')
    .option('--dry-run', 'validate and show what would change, store nothing')
    .option('--json', 'machine-readable output')
    .action(async (file: string, o: { dryRun?: boolean; json?: boolean }) => {
      const path = resolve(file);
      loadClusterConfig(path); // errors name file:line:field before anything reaches the cluster
      const r = (await ask({
        op: 'apply',
        yaml: readFileSync(path, 'utf8'),
        file: path,
        dryRun: !!o.dryRun,
      })) as ApplyResult;
      emit(!!o.json, r, () =>
        [
          ...r.summary,
          `added: ${r.added.join(', ') || '-'}; changed: ${r.changed.join(', ') || '-'}; removed (stopped, data kept): ${r.removed.join(', ') || '-'}`,
          r.stored ? 'stored in the cluster' : 'dry run: nothing stored',
        ].join('\n'),
      );
    });

  program
    .command('events')
    .description(
      "the cluster's log: every decision, fence, start, stop, link change and operator action, with its reason",
    )
    .option('--limit <n>', 'how many of the newest events', '100')
    .option('--since <time>', 'only events since then: an ISO time or an age (30s, 10m, 2h, 1d)')
    .option('-f, --follow', 'keep printing new events as they come (Ctrl-C to end)')
    .option('--json', 'machine-readable output (with --follow: one JSON object per line)')
    .action(async (o: { limit: string; since?: string; follow?: boolean; json?: boolean }) => {
      const limit = Number(o.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
        throw new UserError(`--limit: expected a whole number from 1 to 10000, got "${o.limit}"`);
      const since = o.since === undefined ? undefined : parseSince(o.since, Date.now());
      const r = (await ask({ op: 'events', limit, since })) as { events: EventRecord[]; count: number };
      if (!o.follow) return emit(!!o.json, r, () => r.events.map(formatEvent).join('\n'));
      const print = (e: EventRecord) =>
        process.stdout.write(`${o.json ? JSON.stringify(e) : formatEvent(e)}\n`);
      r.events.forEach(print);
      // Polled once a second from the newest time seen; events of that same millisecond already
      // printed are skipped by their text.
      let last = r.events.at(-1)?.at ?? since ?? Date.now();
      let seen = new Set(r.events.filter((e) => e.at === last).map(eventId));
      for (;;) {
        await new Promise((res) => setTimeout(res, 1000));
        const next = (await ask({ op: 'events', limit: 10_000, since: last })) as { events: EventRecord[] };
        const fresh = next.events.filter((e) => !seen.has(eventId(e)));
        fresh.forEach(print);
        if (fresh.length) {
          last = fresh.at(-1)!.at;
          seen = new Set(next.events.filter((e) => e.at === last).map(eventId));
        }
      }
    });

  program
    .command('volumes')
    .description(
      "every vserver's volume and its replicas: node, role, disk state, up to date, epoch, sync (out-of-sync bytes, resync)",
    )
    .option('--json', 'machine-readable output (the shape of GET /api/volumes)')
    .action(async (o: { json?: boolean }) => {
      const r = (await ask({ op: 'volumes' })) as VolumesAnswer;
      emit(!!o.json, r, () =>
        r.volumes.length ? table(VOLUME_COLUMNS, formatVolumes(r)) : 'no vservers (cvserver apply)',
      );
    });

  program
    .command('links')
    .description(
      'the membership mesh from this node: every link to every node (state, RTT, loss), dropped packets',
    )
    .option('--json', 'machine-readable output')
    .action(async (o: { json?: boolean }) => {
      const r = (await ask({ op: 'links' })) as MeshReport | null;
      if (!r) throw new UserError('the membership mesh has not started yet on this node');
      emit(!!o.json, r, () => formatLinks(r));
    });
}

const ms = (x: number | null) => (x === null ? '-' : x < 10 ? x.toFixed(2) : x.toFixed(0));

function formatLinks(r: MeshReport): string {
  const dropped = Object.entries(r.dropped).filter(([, n]) => n > 0);
  const out = [
    `membership mesh on ${r.node}: UDP port ${r.port}, a heartbeat every ${r.intervalMs} ms on every link, a link is down after ${r.deadAfterMs} ms without one`,
    ...r.problems.map((p) => `problem: ${p}`),
    '',
    table(
      [
        'PEER',
        'LINK',
        'LOCAL',
        'REMOTE',
        'STATE',
        'FOR',
        'HEARD',
        'RTT LAST/AVG/MAX ms',
        'LOSS 1 min',
        'RECEIVED',
        'LOST',
      ],
      r.links.map((l) => [
        l.peer,
        String(l.link),
        l.local,
        l.remote,
        l.state,
        `${l.forS.toFixed(1)}s`,
        l.lastHeardAgoMs === null ? 'never' : `${l.lastHeardAgoMs}ms ago`,
        `${ms(l.rttLastMs)}/${ms(l.rttAvgMs)}/${ms(l.rttMaxMs)}`,
        l.lossPct === null
          ? '-'
          : `${l.lossPct}% (${l.lostLastMinute}/${l.lostLastMinute + l.receivedLastMinute})`,
        String(l.received),
        String(l.lost),
      ]),
    ),
    '',
    `nodes: ${r.peers.map((p) => `${p.name} ${p.reachable === 'yes' ? 'reachable' : p.reachable === 'no' ? 'UNREACHABLE' : 'not heard yet'} (${p.forS.toFixed(1)}s)`).join(', ') || '-'}`,
    `sent ${r.sent} packets (${r.sendErrors} send errors); dropped: ${dropped.map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}${r.lastDrop ? ` (last: ${r.lastDrop.reason} from ${r.lastDrop.from}${r.lastDrop.node ? ` (${r.lastDrop.node})` : ''}, ${(r.lastDrop.agoMs / 1000).toFixed(1)} s ago)` : ''}`,
  ];
  return out.join('\n');
}

/** Who sees whom on which link: a row per (observer, observed), a column per link. */
function formatMatrix(r: MeshReport): string[] {
  if (r.problems.length && r.matrix.length === 0) return ['', `links: ${r.problems.join('; ')}`];
  const links = Math.max(0, ...r.matrix.map((c) => c.link + 1));
  return [
    '',
    table(
      ['SEEN BY', 'NODE', ...Array.from({ length: links }, (_, i) => `LINK ${i} (rtt, loss 1 min)`)],
      matrixRows(r.matrix, links),
    ),
  ];
}

const eventId = (e: EventRecord) => `${e.at} ${e.node} ${e.source} ${e.text}`;

const AGE_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: an age (`30s`, `10m`, `2h`, `1d`) before `now`, or an ISO time; ms since the epoch. */
export function parseSince(text: string, now: number): number {
  const age = /^(\d+(?:\.\d+)?)([smhd])$/.exec(text.trim());
  if (age) return now - Number(age[1]) * AGE_UNITS[age[2]!]!;
  const t = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(t))
    throw new UserError(
      `--since: expected an age like 30s, 10m, 2h, 1d or an ISO time like 2026-12-01T10:00:00Z, got "${text}"`,
    );
  return t;
}

export function formatEvent(e: EventRecord): string {
  return `${new Date(e.at).toISOString()} ${e.node} ${e.source}: ${e.text}`;
}

async function findRejection(vserver: string, node: string, since: number): Promise<string | undefined> {
  const r = (await ask({ op: 'events', limit: 200 })) as { events: EventRecord[] };
  const hit = r.events.find(
    (e) =>
      e.at >= since - 1000 &&
      e.source === 'manager' &&
      e.text.startsWith(`migrate ${vserver} ${node}: rejected`),
  );
  return hit?.text;
}

function formatStatus(s: ClusterStatus): string {
  const secs = (x: number | null) => (x === null ? '-' : `${x.toFixed(1)}s`);
  const out = [
    `cluster ${s.cluster} (format ${s.format ?? 1}), seen from ${s.node}; manager: ${s.manager ?? 'none'}${s.configApplied ? '' : '; no configuration applied yet (cvserver apply cluster.yaml)'}`,
    ...(s.maintenance
      ? [
          `MAINTENANCE since ${new Date(s.maintenance.at).toISOString()} (by ${s.maintenance.by}): the manager decides nothing; nodes still fence on lease loss`,
        ]
      : []),
    ...(s.local.refusal ? [`THIS AGENT DOES NOT ACT ON THE CLUSTER: ${s.local.refusal}`] : []),
    `this node: lease ${s.local.lease ?? 'none'} valid for ${secs(s.local.leaseValidFor)}${s.local.fenced ? ', FENCED' : ''}${s.local.lastError ? `; last problem: ${s.local.lastError}` : ''}`,
    '',
    table(
      ['NODE', 'ROLE', 'ADDRESS', 'LEASE', 'AGENT (FORMATS)'],
      s.nodes.map((n) => [
        n.name,
        n.role,
        n.addresses.join(','),
        n.lease + (n.fenced ? ' (fenced)' : '') + (n.standby ? ', standby' : ''),
        n.agentVersion ? `${n.agentVersion} (${n.formats})` : '-',
      ]),
    ),
    ...(s.mesh ? formatMatrix(s.mesh) : []),
    '',
    table(
      ['ETCD MEMBER', 'HEALTH', 'LEADER', 'VERSION'],
      s.etcd.map((e) => [
        e.endpoint,
        e.healthy ? 'healthy' : `unreachable: ${e.error}`,
        e.leader ? 'yes' : '',
        e.version,
      ]),
    ),
    '',
    table(
      ['VSERVER', 'DESIRED', 'NODE', 'STATUS', 'EPOCH', 'ADDRESS', 'REPLICAS'],
      s.vservers.map((v) => [
        v.name,
        v.retired ? 'removed' : v.desired,
        v.node ?? '-',
        v.failed ? `failed: ${v.failed}` : v.status,
        String(v.epoch),
        v.address ?? '-',
        v.replicas.map((r) => `${r.node}:${r.role}/${r.diskState || '?'}`).join(' '),
      ]),
    ),
    ...formatBackups(s),
  ];
  if (s.problems.length) out.push('', 'stored records set aside:', ...s.problems.map((p) => `  ${p}`));
  return out.join('\n');
}

/** Scheduled backups (docs/backup.md): the last success of each vserver's and of the cluster's state. */
function formatBackups(s: ClusterStatus): string[] {
  const rows = [
    ...s.vservers.flatMap((v) => (v.backup ? [[v.name, v.backup] as const] : [])),
    ...(s.clusterBackup ? [['(cluster state)', s.clusterBackup] as const] : []),
  ];
  if (rows.length === 0) return [];
  const when = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
  return [
    '',
    table(
      ['BACKUP OF', 'SCHEDULE', 'LAST SUCCESS', 'ADDED', 'TOOK', 'NOW'],
      rows.map(([name, b]) => [
        name,
        b.schedule,
        b.lastSuccess ? `${when(b.lastSuccess.at)} on ${b.lastSuccess.node}` : 'never',
        b.lastSuccess?.bytesAdded == null ? '-' : formatSize(b.lastSuccess.bytesAdded),
        b.lastSuccess?.seconds == null ? '-' : `${b.lastSuccess.seconds}s`,
        [
          b.late ? 'LATE (older than twice the period)' : '',
          b.running ? `running on ${b.running.node}` : '',
          b.lastError ? `last run failed: ${b.lastError}` : '',
        ]
          .filter(Boolean)
          .join('; ') || 'ok',
      ]),
    ),
  ];
}
