/**
 * `/metrics` in the Prometheus text format (0.0.4), rendered (pure) from what `cvserver status --json`
 * shows and the agent's own process numbers. Every metric is documented in docs/metrics.md.
 */

import type { LocalVolumeCounters } from '../resources.ts';
import type { ClusterStatus } from '../status.ts';

export interface ProcessNumbers {
  cpuUserSeconds: number;
  cpuSystemSeconds: number;
  residentBytes: number;
  startTimeSeconds: number;
  version: string;
}

/** A linearizable read needs etcd's quorum: one this recent proves the cluster quorate. */
export const QUORATE_READ_MS = 6000;

type Labels = Record<string, string>;
interface Family {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  samples: { labels: Labels; value: number }[];
}

/** The vserver states as a fixed set (status may also be a waiting reason: that is `unplaced`). */
export const VSERVER_STATES = [
  'starting',
  'running',
  'healthy',
  'failed',
  'stopping',
  'stopped',
  'unreported',
  'unplaced',
] as const;
export const REPLICA_ROLES = ['primary', 'secondary', 'none', 'unknown', 'unreachable'] as const;

export function vserverState(status: string): (typeof VSERVER_STATES)[number] {
  return (VSERVER_STATES as readonly string[]).includes(status)
    ? (status as (typeof VSERVER_STATES)[number])
    : 'unplaced';
}

export function renderMetrics(
  s: ClusterStatus,
  p: ProcessNumbers,
  local: LocalVolumeCounters[] = [],
): string {
  const fams: Family[] = [];
  const fam = (name: string, type: Family['type'], help: string): Family['samples'] => {
    const f: Family = { name: `cvserver_${name}`, help, type, samples: [] };
    fams.push(f);
    return f.samples;
  };
  const b = (x: boolean) => (x ? 1 : 0);

  fam('agent_info', 'gauge', 'This agent: its node, cluster and release (always 1).').push({
    labels: { node: s.node, cluster: s.cluster, version: p.version },
    value: 1,
  });
  fam('agent_cpu_seconds_total', 'counter', "CPU time used by this agent's process, by mode.").push(
    { labels: { mode: 'user' }, value: p.cpuUserSeconds },
    { labels: { mode: 'system' }, value: p.cpuSystemSeconds },
  );
  fam('agent_resident_memory_bytes', 'gauge', "Resident memory of this agent's process.").push({
    labels: {},
    value: p.residentBytes,
  });
  fam('agent_start_time_seconds', 'gauge', 'When this agent started (Unix time).').push({
    labels: {},
    value: p.startTimeSeconds,
  });
  fam('agent_acting', 'gauge', '1 while this agent acts on the cluster (0: a format it does not know).').push(
    {
      labels: {},
      value: b(s.local.refusal === ''),
    },
  );

  const age = s.local.storeAgeMs;
  fam(
    'cluster_quorate',
    'gauge',
    `1 when this agent read the cluster from etcd (a quorum read) within the last ${QUORATE_READ_MS / 1000} s.`,
  ).push({ labels: {}, value: b(age !== null && age <= QUORATE_READ_MS) });
  if (age !== null)
    fam('cluster_store_read_age_seconds', 'gauge', "Age of this agent's last read of the cluster.").push({
      labels: {},
      value: age / 1000,
    });
  fam('cluster_maintenance', 'gauge', '1 while maintenance mode is on (the manager decides nothing).').push({
    labels: {},
    value: b(s.maintenance !== null),
  });
  fam('cluster_format', 'gauge', 'The stored format the cluster uses.').push({ labels: {}, value: s.format });
  fam('cluster_problems', 'gauge', 'Stored records set aside as unreadable.').push({
    labels: {},
    value: s.problems.length,
  });

  const lease = fam('node_lease_alive', 'gauge', "1 while the node's lease is alive.");
  const manager = fam('node_manager', 'gauge', '1 on the node that holds the manager.');
  const standby = fam('node_standby', 'gauge', '1 while the node is in standby.');
  const fenced = fam('node_fenced', 'gauge', 'The node reports itself fenced.');
  for (const n of s.nodes) {
    lease.push({ labels: { node: n.name, role: n.role }, value: b(n.lease === 'alive') });
    manager.push({ labels: { node: n.name }, value: b(s.manager === n.name) });
    standby.push({ labels: { node: n.name }, value: b(n.standby !== null) });
    fenced.push({ labels: { node: n.name }, value: b(n.fenced) });
  }

  const m = s.mesh;
  if (m) {
    const up = fam(
      'link_up',
      'gauge',
      'Mesh link from one node to another: 1 up, 0 down (stale views left out).',
    );
    const rtt = fam('link_rtt_seconds', 'gauge', 'Mesh link round-trip time, average over the last minute.');
    const loss = fam('link_loss_ratio', 'gauge', 'Mesh link heartbeats lost over the last minute (0 to 1).');
    for (const c of m.matrix) {
      if (c.state === 'stale') continue;
      const labels = { from: c.from, to: c.to, link: String(c.link) };
      up.push({ labels, value: b(c.state === 'up') });
      if (c.rttMs !== null) rtt.push({ labels, value: c.rttMs / 1000 });
      if (c.lossPct !== null) loss.push({ labels, value: c.lossPct / 100 });
    }
    const rx = fam(
      'link_received_heartbeats_total',
      'counter',
      'Heartbeats this node received, by peer and link.',
    );
    const lost = fam(
      'link_lost_heartbeats_total',
      'counter',
      'Heartbeats this node missed, by peer and link.',
    );
    for (const l of m.links) {
      const labels = { peer: l.peer, link: String(l.link) };
      rx.push({ labels, value: l.received });
      lost.push({ labels, value: l.lost });
    }
    fam('mesh_sent_heartbeats_total', 'counter', 'Heartbeats this node sent.').push({
      labels: {},
      value: m.sent,
    });
    const dropped = fam('mesh_dropped_packets_total', 'counter', 'Packets this node dropped, by reason.');
    for (const [reason, n] of Object.entries(m.dropped)) dropped.push({ labels: { reason }, value: n });
  }

  const state = fam('vserver_state', 'gauge', 'The vserver is in this state (1), one series per state.');
  const healthy = fam('vserver_healthy', 'gauge', '1 while the vserver runs and passes its health checks.');
  const placed = fam('vserver_node', 'gauge', 'The node the vserver is assigned to (1).');
  const desired = fam('vserver_desired_started', 'gauge', '1 when the vserver should run.');
  const epoch = fam('vserver_epoch', 'gauge', "The vserver's epoch: it grows with every placement.");
  const restarts = fam('vserver_restarts', 'gauge', 'Restarts in place since the vserver was last placed.');
  const reloc = fam('vserver_relocations', 'gauge', 'Relocations (failovers) within policy.failure_timeout.');
  const failures = fam('vserver_failures', 'gauge', 'Failures counted within policy.failure_timeout.');
  const failed = fam(
    'vserver_failed',
    'gauge',
    '1 when the manager gave up on the vserver (cleared by clear).',
  );
  const role = fam('volume_role', 'gauge', "The replica's role (1), one series per role.");
  const disk = fam('volume_disk_state', 'gauge', "The replica's disk state (1).");
  const upToDate = fam('volume_up_to_date', 'gauge', '1 when the replica is up to date.');
  const oos = fam(
    'volume_out_of_sync_bytes',
    'gauge',
    'Bytes the peers still lack, as this replica counts them.',
  );
  const resync = fam(
    'volume_resync_bytes_per_second',
    'gauge',
    'Resync speed from this replica to its peers.',
  );
  const suspended = fam('volume_suspended_writes', 'gauge', 'Writes held for want of a quorum of replicas.');
  const split = fam(
    'volume_split_brain',
    'gauge',
    '1 when a peer link of this replica is parked in split-brain.',
  );
  for (const v of s.vservers) {
    const st = vserverState(v.status);
    for (const x of VSERVER_STATES) state.push({ labels: { vserver: v.name, state: x }, value: b(x === st) });
    healthy.push({ labels: { vserver: v.name }, value: b(v.status === 'healthy') });
    if (v.node) placed.push({ labels: { vserver: v.name, node: v.node }, value: 1 });
    desired.push({ labels: { vserver: v.name }, value: b(v.desired === 'started') });
    epoch.push({ labels: { vserver: v.name }, value: v.epoch });
    restarts.push({ labels: { vserver: v.name }, value: v.restarts });
    reloc.push({ labels: { vserver: v.name }, value: v.relocations });
    failures.push({ labels: { vserver: v.name }, value: v.failures });
    failed.push({ labels: { vserver: v.name }, value: b(v.failed !== null) });
    for (const r of v.replicas) {
      const labels = { volume: v.name, node: r.node };
      for (const x of REPLICA_ROLES) role.push({ labels: { ...labels, role: x }, value: b(r.role === x) });
      if (r.diskState) disk.push({ labels: { ...labels, state: r.diskState }, value: 1 });
      upToDate.push({ labels, value: b(r.upToDate) });
      if (r.outOfSyncBytes !== null) oos.push({ labels, value: r.outOfSyncBytes });
      if (r.resyncBytesPerSecond !== null) resync.push({ labels, value: r.resyncBytesPerSecond });
      if (r.suspendedWrites !== null) suspended.push({ labels, value: r.suspendedWrites });
      if (r.splitBrain !== null) split.push({ labels, value: b(r.splitBrain) });
    }
  }

  // Scheduled backups (docs/backup.md): job = the vserver, or @cluster for the cluster's own state.
  const jobs = [
    ...s.vservers.flatMap((v) => (v.backup ? [[v.name, v.backup] as const] : [])),
    ...(s.clusterBackup ? [['@cluster', s.clusterBackup] as const] : []),
  ];
  const lastOk = fam(
    'backup_last_success_timestamp_seconds',
    'gauge',
    'When the last successful backup ended (Unix time).',
  );
  const added = fam(
    'backup_last_success_added_bytes',
    'gauge',
    'Bytes the last successful backup added to the repository.',
  );
  const took = fam(
    'backup_last_success_duration_seconds',
    'gauge',
    'How long the last successful backup took.',
  );
  const lastFailed = fam('backup_last_run_failed', 'gauge', '1 when the last run of the backup failed.');
  const late = fam(
    'backup_late',
    'gauge',
    '1 when the last success is older than twice the schedule period (or none).',
  );
  const running = fam('backup_running', 'gauge', '1 while a run is in progress.');
  for (const [job, bk] of jobs) {
    const labels = { job };
    if (bk.lastSuccess) {
      lastOk.push({ labels, value: bk.lastSuccess.at / 1000 });
      if (bk.lastSuccess.bytesAdded !== null) added.push({ labels, value: bk.lastSuccess.bytesAdded });
      if (bk.lastSuccess.seconds !== null) took.push({ labels, value: bk.lastSuccess.seconds });
    }
    lastFailed.push({ labels, value: b(bk.lastError !== null) });
    late.push({ labels, value: b(bk.late) });
    running.push({ labels, value: b(bk.running !== null) });
  }

  // Read from this node's daemons, not from the cluster's reports: they change with every write.
  const ioBytes = fam(
    'volume_io_bytes_total',
    'counter',
    "Bytes read and written through this node's volume daemon (since it started).",
  );
  const ioOps = fam(
    'volume_io_operations_total',
    'counter',
    "Reads, writes and fsyncs through this node's volume daemon (since it started).",
  );
  for (const c of local) {
    const at = { volume: c.volume, node: s.node };
    ioBytes.push(
      { labels: { ...at, op: 'read' }, value: c.bytesRead },
      { labels: { ...at, op: 'write' }, value: c.bytesWritten },
    );
    ioOps.push(
      { labels: { ...at, op: 'read' }, value: c.reads },
      { labels: { ...at, op: 'write' }, value: c.writes },
      { labels: { ...at, op: 'fsync' }, value: c.fsyncs },
    );
  }

  const out: string[] = [];
  for (const f of fams) {
    if (f.samples.length === 0) continue;
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const x of f.samples) out.push(`${f.name}${labelText(x.labels)} ${numberText(x.value)}`);
  }
  return `${out.join('\n')}\n`;
}

function labelText(l: Labels): string {
  const e = Object.entries(l);
  if (e.length === 0) return '';
  return `{${e.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function numberText(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Number.POSITIVE_INFINITY) return '+Inf';
  if (x === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(x);
}
