import { dirname, join } from 'node:path';
import { z } from 'zod';
import { loadYamlFile, parseYaml } from '../lib/config.ts';
import { cronError } from '../lib/cron.ts';
import { formatSize } from '../lib/size.ts';
import {
  ipv4Schema,
  sameSubnet,
  sizeSchema,
  VSERVER_NAME,
  type VserverDefinition,
  vserverDefinitionSchema,
} from '../vserver/definition.ts';
import type { Desired, Policy } from './types.ts';

/**
 * cluster.yaml: the whole cluster in one file (nodes, timing, the manager's policy, every vserver with
 * its volume and placement). Parsing is pure and checks everything before anything acts on it: schema
 * errors and cross-checks alike come out as one line `FILE:LINE:COL: field.path: message`.
 * All times here are seconds; a vserver's `definition` keeps the vserver module's own units (ms, bytes).
 */

const NODE_NAME = /^[a-z][a-z0-9-]{0,30}$/;
const CLUSTER_NAME = /^[a-z][a-z0-9-]{0,62}$/;
/** etcd refuses a lease TTL below its minimum: 1.5 × the election timeout, rounded up (2 s with the defaults). */
function etcdMinTtl(electionMs: number): number {
  return Math.ceil((1.5 * electionMs) / 1000);
}
/** The volume's limits (src/volume/lifecycle.ts): whole 4 KiB blocks, at least 16M. */
const VOLUME_BLOCK = 4096;
const VOLUME_MIN = 16 * 1024 * 1024;

const nodeName = z
  .string()
  .regex(NODE_NAME, 'expected a node name: a lowercase letter, then letters, digits, dashes (at most 31)');
const absolutePath = z.string().startsWith('/', 'expected an absolute path');
const port = z.number().int().min(1).max(65535);
const seconds = z.number().positive('expected a positive number of seconds');

const nodeSchema = z.strictObject({
  name: nodeName,
  /** A witness stores no data: it votes in etcd and runs the tiebreaker of two-replica volumes. */
  role: z.enum(['full', 'witness']).default('full'),
  /** One per link (addresses[i] is link i of the membership mesh); the first is the etcd and replication address. */
  addresses: z
    .array(ipv4Schema)
    .min(1, 'expected at least one address')
    .max(8, 'at most 8 addresses (links) per node'),
});

const etcdSchema = z
  .strictObject({
    /** External etcd: when set, agents use these and run no member of their own. */
    endpoints: z
      .array(z.url({ protocol: /^https$/, error: 'expected an https:// URL, e.g. https://10.0.0.1:2379' }))
      .default([]),
    client_port: port.default(2379),
    peer_port: port.default(2380),
    /** Raft heartbeat and election timeout of the members (etcd's defaults suit a LAN). */
    heartbeat_ms: z.number().int().min(10).max(5000).default(100),
    election_ms: z.number().int().min(50).max(50_000).default(1000),
  })
  .prefault({});

const timingSchema = z
  .strictObject({
    lease_ttl: z
      .number()
      .positive()
      .refine(Number.isInteger, 'expected whole seconds (etcd lease TTLs are whole seconds)')
      .default(3),
    loop_interval: seconds.default(0.5),
    renew_timeout: seconds.default(0.5),
    fence_margin: seconds.default(1),
  })
  .prefault({});

/** The membership mesh: UDP heartbeats between every pair of nodes on every link (src/agent/mesh/). */
const membershipSchema = z
  .strictObject({
    port: port.default(5405),
    interval_ms: z.number().int().min(20).max(10_000).default(250),
    dead_after_ms: z.number().int().min(60).max(120_000).default(1000),
  })
  .prefault({});

// The agent's HTTP API, dashboard and /metrics (docs/http.md): read at agent start, like etcd and timing.
const httpSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    port: port.default(9443),
    /** false: plain HTTP, and then only on 127.0.0.1 (a token must never cross a network in clear). */
    tls: z.boolean().default(true),
    /** false: /metrics answers without a token (for a Prometheus without one; the admin's choice). */
    metrics_auth: z.boolean().default(true),
    /** A certificate the admin gives (PEM), else the node's own from tls_dir (made by `cvserver init`). */
    cert_file: absolutePath.optional(),
    key_file: absolutePath.optional(),
  })
  .refine((h) => (h.cert_file === undefined) === (h.key_file === undefined), {
    message: 'expected both cert_file and key_file, or neither',
    path: ['cert_file'],
  })
  .prefault({});
export type HttpSpec = z.output<typeof httpSchema>;

const policySchema = z
  .strictObject({
    max_restarts: z.number().int().min(0).default(1),
    max_relocations: z.number().int().min(0).default(1),
    failure_timeout: seconds.default(300),
    failback: z.boolean().default(false),
  })
  .prefault({});

const volumeSchema = z.strictObject({
  size: sizeSchema.refine((b) => b >= VOLUME_MIN && b % VOLUME_BLOCK === 0, {
    message: 'expected at least 16M, a whole number of 4K blocks',
  }),
  filesystem: z.enum(['ext4', 'xfs']).default('ext4'),
  replicas: z
    .array(z.string())
    .min(1, 'expected at least one replica node')
    .max(3, 'at most 3 replicas (a volume has 1, 2 or 3)'),
  /** The replication TCP port of this volume on every replica (and the witness's tiebreaker). */
  port,
});

const placementSchema = z
  .strictObject({
    preferred: z.array(z.string()).default([]),
    avoid: z.array(z.string()).default([]),
    anti_affinity: z.array(z.string()).default([]),
  })
  .prefault({});

// Backups (issue 12, docs/backup.md): the cluster's restic repository, and per vserver a schedule and retention.
const cronSchema = z.string().superRefine((v, ctx) => {
  const err = cronError(v);
  if (err) ctx.addIssue({ code: 'custom', message: err });
});
const keepCount = z.number().int().nonnegative();
const keepSchema = z
  .strictObject({
    last: keepCount.optional(),
    daily: keepCount.optional(),
    weekly: keepCount.optional(),
    monthly: keepCount.optional(),
  })
  .refine((k) => Object.values(k).some((n) => n !== undefined && n > 0), {
    message: 'expected at least one of last, daily, weekly, monthly above 0 (else every backup is forgotten)',
  });
const backupSchema = z.strictObject({
  /** Any restic repository: a path, sftp:..., rest:..., s3:... */
  repository: z.string().min(1, 'expected a restic repository (a path or URL)'),
  /** The repository's password, in a file of mode 600 (checked when a backup command reads it). */
  password_file: absolutePath,
  /** When `forget --prune` applies the retentions (it rewrites the repository's index: not with every backup). */
  prune_schedule: cronSchema.default('30 4 * * 0'),
  /** When the manager backs up the cluster's own state (an etcd snapshot and the applied cluster.yaml). */
  cluster_schedule: cronSchema.default('15 3 * * *'),
  /** Which backups of the cluster's state the retention keeps. */
  cluster_keep: keepSchema.default({ last: 7, daily: 14 }),
});
const vserverBackupSchema = z.strictObject({
  schedule: cronSchema,
  keep: keepSchema,
});
export type BackupSpec = z.output<typeof backupSchema>;
export type VserverBackupSpec = z.output<typeof vserverBackupSchema>;

const def = vserverDefinitionSchema.shape;

/** A vserver in the cluster: a vserver definition without name and rootfs (the volume is its rootfs). */
const vserverEntrySchema = z.strictObject({
  desired: z.enum(['started', 'stopped', 'disabled']).default('started'),
  /** The root filesystem is made from it on first start, on the volume. */
  template: z.enum(['busybox', 'debian']),
  command: def.command,
  hostname: def.hostname,
  env: def.env,
  network: def.network,
  limits: def.limits,
  stop: def.stop,
  allow: def.allow,
  health_checks: def.health_checks,
  volume: volumeSchema,
  placement: placementSchema,
  backup: vserverBackupSchema.optional(),
});

type RawCluster = z.output<typeof rawClusterSchema>;
type RawVserver = z.output<typeof vserverEntrySchema>;

const rawClusterSchema = z.strictObject({
  cluster: z
    .string()
    .regex(CLUSTER_NAME, 'expected a cluster name: a lowercase letter, then letters, digits, dashes'),
  /** The shared secret (volume replication auth), at this path on every node. */
  secret_file: absolutePath.default('/etc/cvserver/secret'),
  /** ca.crt, <node>.crt, <node>.key; default: `tls` beside secret_file. */
  tls_dir: absolutePath.optional(),
  /** When absent, the agent's state directory (CVSERVER_STATE_DIR or /var/lib/cvserver). */
  state_dir: absolutePath.optional(),
  nodes: z.array(nodeSchema).min(1, 'expected at least one node'),
  etcd: etcdSchema,
  timing: timingSchema,
  membership: membershipSchema,
  http: httpSchema,
  policy: policySchema,
  backup: backupSchema.optional(),
  vservers: z
    .record(z.string().regex(VSERVER_NAME), vserverEntrySchema, {
      error: (issue) =>
        issue.code === 'invalid_key'
          ? 'expected a vserver name of lowercase letters, digits and dashes (at most 32)'
          : undefined,
    })
    .default({}),
});

export interface VserverSpec {
  name: string;
  desired: Desired;
  template: 'busybox' | 'debian';
  /** What `vserver create` would take; restarts are the manager's (policy), so its own policy is 'no'. */
  definition: Omit<VserverDefinition, 'rootfs'>;
  volume: { size: number; filesystem: 'ext4' | 'xfs'; replicas: string[]; port: number };
  placement: { preferred: string[]; avoid: string[]; antiAffinity: string[] };
}

export const clusterConfigSchema = rawClusterSchema.superRefine(crossCheck).transform((raw) => ({
  ...raw,
  tls_dir: raw.tls_dir ?? join(dirname(raw.secret_file), 'tls'),
  vservers: Object.fromEntries(
    Object.entries(raw.vservers).map(([name, v]) => [name, toVserverSpec(name, v)]),
  ),
  // Apart from VserverSpec: a backup setting is not part of what runs (changing it restarts nothing).
  backups: Object.fromEntries(
    Object.entries(raw.vservers).flatMap(([name, v]) => (v.backup ? [[name, v.backup] as const] : [])),
  ) as Record<string, VserverBackupSpec>,
}));

export type ClusterSpec = z.output<typeof clusterConfigSchema>;
export type NodeSpec = ClusterSpec['nodes'][number];

/** Timing of the node's lease and fencing, in seconds. */
export interface Timing {
  leaseTtl: number;
  loopInterval: number;
  renewTimeout: number;
  /** The agent stops everything at (send time of the last acknowledged renewal) + leaseTtl - fenceMargin. */
  fenceMargin: number;
  /** The independent guard kills at this offset after that send time: leaseTtl - fenceMargin/2. */
  guardDeadline: number;
}

export function parseClusterConfig(text: string, file: string): ClusterSpec {
  return parseYaml(text, file, clusterConfigSchema);
}

export function loadClusterConfig(file: string): ClusterSpec {
  return loadYamlFile(file, clusterConfigSchema);
}

export function timingOf(spec: ClusterSpec): Timing {
  const t = spec.timing;
  return {
    leaseTtl: t.lease_ttl,
    loopInterval: t.loop_interval,
    renewTimeout: t.renew_timeout,
    fenceMargin: t.fence_margin,
    guardDeadline: t.lease_ttl - t.fence_margin / 2,
  };
}

/** The membership mesh's settings (ms, as in cluster.yaml). */
export interface MembershipTiming {
  port: number;
  intervalMs: number;
  deadAfterMs: number;
}

export function membershipOf(spec: ClusterSpec): MembershipTiming {
  const m = spec.membership;
  return { port: m.port, intervalMs: m.interval_ms, deadAfterMs: m.dead_after_ms };
}

export function managerPolicy(spec: ClusterSpec): Policy {
  return { ...spec.policy };
}

/** The etcd members: every node, full or witness, in file order. */
export function votingNodes(spec: ClusterSpec): string[] {
  return spec.nodes.map((n) => n.name);
}

/** Nodes that can hold data and run vservers. */
export function fullNodes(spec: ClusterSpec): string[] {
  return spec.nodes.filter((n) => n.role === 'full').map((n) => n.name);
}

export function vserverSpecs(spec: ClusterSpec): VserverSpec[] {
  return Object.values(spec.vservers);
}

/**
 * The spec with the vservers an apply removed put back as `desired: stopped`: the manager stops them
 * and their replicas keep the data, as the operator's removal asked. A name defined again wins.
 */
export function withRetired(spec: ClusterSpec, retired: Record<string, VserverSpec>): ClusterSpec {
  const vservers = { ...spec.vservers };
  for (const [name, v] of Object.entries(retired))
    if (!vservers[name]) vservers[name] = { ...v, name, desired: 'stopped' };
  return { ...spec, vservers };
}

/**
 * The spec without the nodes `cvserver node remove` took out: gone from the nodes, from every volume's
 * replicas and from the preferred placements (their entries stay in the stored yaml for a later add).
 */
export function withoutRemoved(spec: ClusterSpec, removed: Iterable<string>): ClusterSpec {
  const gone = new Set(removed);
  if (gone.size === 0) return spec;
  const keep = (n: string) => !gone.has(n);
  const vservers = Object.fromEntries(
    Object.entries(spec.vservers).map(([name, v]) => [
      name,
      {
        ...v,
        volume: { ...v.volume, replicas: v.volume.replicas.filter(keep) },
        placement: { ...v.placement, preferred: v.placement.preferred.filter(keep) },
      },
    ]),
  );
  return { ...spec, nodes: spec.nodes.filter((n) => keep(n.name)), vservers };
}

/** One line per node and per vserver (plus the cluster and its timing), for a human summary. */
export function describeSpec(spec: ClusterSpec): string[] {
  const t = timingOf(spec);
  const etcd = spec.etcd.endpoints.length
    ? `external etcd ${spec.etcd.endpoints.join(', ')}`
    : `etcd members on ${votingNodes(spec).join(', ')} (client port ${spec.etcd.client_port}, peer port ${spec.etcd.peer_port})`;
  const lines = [
    `cluster ${spec.cluster}: ${spec.nodes.length} node${spec.nodes.length === 1 ? '' : 's'}, ${etcd}`,
    `timing: lease ${t.leaseTtl}s, loop ${t.loopInterval}s, renew timeout ${t.renewTimeout}s; a node stops its vservers ${t.leaseTtl - t.fenceMargin}s after its last acknowledged renewal was sent, its guard at ${t.guardDeadline}s`,
  ];
  for (const n of spec.nodes) lines.push(`node ${n.name} (${n.role}) ${n.addresses.join(', ')}`);
  for (const v of vserverSpecs(spec)) {
    const net = v.definition.network;
    const parts = [
      `vserver ${v.name}: ${v.desired}, template ${v.template}`,
      net ? `${net.addresses.join(', ')} on ${net.bridge}` : 'no network',
      `volume ${formatSize(v.volume.size)} ${v.volume.filesystem} on ${v.volume.replicas.join(', ')} port ${v.volume.port}`,
    ];
    if (v.placement.preferred.length) parts.push(`preferred ${v.placement.preferred.join(', ')}`);
    if (v.placement.avoid.length) parts.push(`avoid ${v.placement.avoid.join(', ')}`);
    if (v.placement.antiAffinity.length) parts.push(`not with ${v.placement.antiAffinity.join(', ')}`);
    lines.push(parts.join(', '));
  }
  return lines;
}

function toVserverSpec(name: string, v: RawVserver): VserverSpec {
  return {
    name,
    desired: v.desired,
    template: v.template,
    definition: {
      name,
      command: v.command,
      hostname: v.hostname,
      env: v.env,
      network: v.network,
      limits: v.limits,
      stop: v.stop,
      allow: v.allow,
      health_checks: v.health_checks,
      restart: { policy: 'no', max_restarts: 0, window: 600_000 },
    },
    volume: { ...v.volume },
    placement: {
      preferred: v.placement.preferred,
      avoid: v.placement.avoid,
      antiAffinity: v.placement.anti_affinity,
    },
  };
}

type Path = (string | number)[];

/** Everything one field cannot say alone. The first issue added is the one reported. */
function crossCheck(c: RawCluster, ctx: z.RefinementCtx): void {
  const fail = (path: Path, message: string) => ctx.addIssue({ code: 'custom', path, message });
  for (const [name, v] of Object.entries(c.vservers))
    if (v.backup && !c.backup)
      fail(
        ['vservers', name, 'backup'],
        'a backup schedule needs the top-level backup section (repository, password_file)',
      );

  const roles = new Map<string, 'full' | 'witness'>();
  const addressOwner = new Map<string, string>();
  c.nodes.forEach((n, i) => {
    if (roles.has(n.name)) fail(['nodes', i, 'name'], `node "${n.name}" is listed twice`);
    roles.set(n.name, n.role);
    n.addresses.forEach((a, j) => {
      const owner = addressOwner.get(a);
      if (owner !== undefined)
        fail(['nodes', i, 'addresses', j], `${a} is already an address of node "${owner}"`);
      addressOwner.set(a, n.name);
    });
  });
  const nodeList = [...roles.keys()].join(', ');
  if (![...roles.values()].includes('full')) fail(['nodes'], 'expected at least one node with role full');
  if (c.etcd.endpoints.length === 0 && roles.size === 2)
    fail(
      ['nodes'],
      'two voting nodes cannot fail over (etcd needs a majority of its members): add a third node or a witness',
    );

  if (c.etcd.client_port === c.etcd.peer_port)
    fail(['etcd', 'peer_port'], `the same port as client_port (${c.etcd.client_port})`);

  checkTiming(c, fail);
  const m = c.membership;
  if (m.dead_after_ms < 3 * m.interval_ms)
    fail(
      ['membership', 'dead_after_ms'],
      `${m.dead_after_ms} is less than 3 × interval_ms (${3 * m.interval_ms}): one or two lost heartbeats would take a link down`,
    );

  const names = new Set(Object.keys(c.vservers));
  const portOwner = new Map<number, string>([
    [c.etcd.client_port, 'etcd.client_port'],
    [c.etcd.peer_port, 'etcd.peer_port'],
  ]);
  const ipOwner = new Map<string, string>();
  for (const [name, v] of Object.entries(c.vservers)) {
    const at = (...rest: Path): Path => ['vservers', name, ...rest];
    const replicas = new Set<string>();
    v.volume.replicas.forEach((r, i) => {
      const role = roles.get(r);
      if (role === undefined) fail(at('volume', 'replicas', i), `unknown node "${r}" (nodes: ${nodeList})`);
      else if (role === 'witness')
        fail(
          at('volume', 'replicas', i),
          `"${r}" is a witness: it stores no data (replicas must be full nodes)`,
        );
      else if (replicas.has(r)) fail(at('volume', 'replicas', i), `"${r}" is listed twice`);
      replicas.add(r);
    });
    v.placement.preferred.forEach((p, i) => {
      if (!roles.has(p)) fail(at('placement', 'preferred', i), `unknown node "${p}" (nodes: ${nodeList})`);
      else if (!replicas.has(p))
        fail(
          at('placement', 'preferred', i),
          `"${p}" holds no replica of this vserver's volume, so it can never run there`,
        );
    });
    v.placement.avoid.forEach((p, i) => {
      if (!roles.has(p)) fail(at('placement', 'avoid', i), `unknown node "${p}" (nodes: ${nodeList})`);
    });
    v.placement.anti_affinity.forEach((o, i) => {
      if (o === name) fail(at('placement', 'anti_affinity', i), 'a vserver cannot avoid itself');
      else if (!names.has(o))
        fail(
          at('placement', 'anti_affinity', i),
          `unknown vserver "${o}" (vservers: ${[...names].join(', ')})`,
        );
    });
    const portUser = portOwner.get(v.volume.port);
    if (portUser !== undefined)
      fail(
        at('volume', 'port'),
        `port ${v.volume.port} is already used by ${portUser} (each volume needs its own port)`,
      );
    portOwner.set(v.volume.port, `vservers.${name}.volume.port`);

    const net = v.network;
    if (!net) continue;
    net.addresses.forEach((cidr, i) => {
      const ip = cidr.split('/')[0] ?? cidr;
      const owner = ipOwner.get(ip) ?? (addressOwner.has(ip) ? `node "${addressOwner.get(ip)}"` : undefined);
      if (owner !== undefined)
        fail(at('network', 'addresses', i), `${ip} is already the address of ${owner}`);
      ipOwner.set(ip, `vserver "${name}"`);
    });
    if (net.gateway && !net.addresses.some((a) => sameSubnet(a, net.gateway ?? '')))
      fail(at('network', 'gateway'), `${net.gateway} is not in the subnet of any address`);
  }
}

/**
 * The node must be able to miss one renewal and still stop everything before its lease can expire
 * (the rule Patroni applies as loop_wait + 2*retry_timeout <= ttl), and the fence must not fall
 * between two loop turns unnoticed.
 */
function checkTiming(c: RawCluster, fail: (path: Path, message: string) => void): void {
  const t = c.timing;
  const minTtl = etcdMinTtl(c.etcd.election_ms);
  if (t.lease_ttl < minTtl)
    fail(
      ['timing', 'lease_ttl'],
      `${t.lease_ttl}s is below etcd's minimum lease TTL (${minTtl}s: 1.5 × election_ms ${c.etcd.election_ms})`,
    );
  if (c.etcd.election_ms < 5 * c.etcd.heartbeat_ms)
    fail(
      ['etcd', 'election_ms'],
      `${c.etcd.election_ms} is less than 5 × heartbeat_ms (${c.etcd.heartbeat_ms}): members would hold elections needlessly`,
    );
  const need = t.loop_interval + 2 * t.renew_timeout + t.fence_margin;
  if (need > t.lease_ttl)
    fail(
      ['timing'],
      `unsafe: loop_interval + 2 × renew_timeout + fence_margin = ${t.loop_interval} + 2 × ${t.renew_timeout} + ${t.fence_margin} = ${round(need)}s exceeds lease_ttl ${t.lease_ttl}s (a node could miss a renewal and not stop its vservers before its lease expires)`,
    );
  if (t.fence_margin < 2 * t.loop_interval)
    fail(
      ['timing', 'fence_margin'],
      `unsafe: ${t.fence_margin}s is less than 2 × loop_interval (${round(2 * t.loop_interval)}s): the agent could notice the fence too late`,
    );
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
