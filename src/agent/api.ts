/**
 * The agent's unix socket (`run/agent.sock`, root only): what `cvserver status`, `migrate`, `apply`,
 * `events` and `links` ask a node's agent. Requests are validated; answers are plain JSON.
 */
import type { Server } from 'node:net';
import { z } from 'zod';
import { type ClusterSpec, describeSpec, fullNodes, parseClusterConfig } from '../cluster/config.ts';
import { UserError } from '../lib/errors.ts';
import { callRpc, serveRpc } from '../lib/unix-rpc.ts';
import type { Agent } from './agent.ts';
import { failoversFrom } from './failovers.ts';
import { SCOPES, tokensOf } from './http/tokens.ts';
import { addNode, removeNode } from './membership/change.ts';
import { RECORD_VERSION } from './records.ts';
import { type ClusterStatus, clusterStatus, meshReportOf } from './status.ts';
import { type VolumesAnswer, volumesOf } from './volumes.ts';

/** Who asks (the CLI sends its user name); the agent adds its node. */
const operator = z.string().max(64).optional();

export const agentRequestSchema = z.discriminatedUnion('op', [
  /** brief: without asking every etcd member for its health (for polling). */
  z.strictObject({ op: z.literal('status'), brief: z.boolean().optional() }),
  z.strictObject({ op: z.literal('migrate'), vserver: z.string(), node: z.string(), by: operator }),
  z.strictObject({ op: z.literal('clear'), vserver: z.string(), by: operator }),
  z.strictObject({ op: z.literal('standby'), node: z.string(), on: z.boolean(), by: operator }),
  z.strictObject({ op: z.literal('maintenance'), on: z.boolean(), by: operator }),
  /** Membership (src/agent/membership/): `commit` false only checks and plans. */
  z.strictObject({ op: z.literal('node-remove'), node: z.string(), commit: z.boolean(), by: operator }),
  z.strictObject({
    op: z.literal('node-add'),
    node: z.string(),
    addresses: z.array(z.string()).min(1).max(8),
    role: z.enum(['full', 'witness']),
    by: operator,
  }),
  z.strictObject({ op: z.literal('apply'), yaml: z.string(), file: z.string(), dryRun: z.boolean() }),
  z.strictObject({
    op: z.literal('events'),
    limit: z.number().int().min(1).max(10_000),
    /** Only events at or after this time (ms since the epoch). */
    since: z.number().optional(),
  }),
  z.strictObject({ op: z.literal('links') }),
  z.strictObject({ op: z.literal('volumes') }),
  /** Failover times from the newest `limit` events (failovers.ts). */
  z.strictObject({ op: z.literal('failovers'), limit: z.number().int().min(1).max(10_000).optional() }),
  /** Back up a vserver now: the node that runs it picks the request up (src/agent/backups.ts). */
  z.strictObject({ op: z.literal('backup-now'), vserver: z.string(), by: operator }),
  // HTTP API tokens (docs/http.md): made, listed and revoked only over this root-only socket.
  z.strictObject({ op: z.literal('token-create'), name: z.string(), scope: z.enum(SCOPES), by: operator }),
  z.strictObject({ op: z.literal('token-list') }),
  z.strictObject({ op: z.literal('token-revoke'), name: z.string(), by: operator }),
]);
export type AgentRequest = z.infer<typeof agentRequestSchema>;

export interface ApplyResult {
  stored: boolean;
  summary: string[];
  added: string[];
  removed: string[];
  changed: string[];
}

export function serveAgentApi(agent: Agent): Promise<Server> {
  return serveRpc(
    agent.paths.socket,
    agentRequestSchema,
    (req) => handleAgentRequest(agent, req),
    1024 * 1024,
  );
}

export function callAgent(socket: string, req: AgentRequest, timeoutMs = 10_000): Promise<unknown> {
  return callRpc(socket, req, 'node agent', timeoutMs);
}

/** Requests that only read: answered also by an agent that does not act on the cluster. */
const READ_ONLY = new Set<AgentRequest['op']>([
  'status',
  'events',
  'links',
  'volumes',
  'failovers',
  'token-list',
]);

/** Every request, from the socket or the HTTP API (src/agent/http/): the one place writes happen. */
export async function handleAgentRequest(agent: Agent, req: AgentRequest): Promise<unknown> {
  const timeoutMs = 2000;
  // An agent that cannot read the cluster (format.ts) writes nothing to it for an operator either.
  const refusal = agent.view().refusal;
  if (refusal && !READ_ONLY.has(req.op) && !(req.op === 'apply' && req.dryRun))
    throw new UserError(
      `this node's agent does not act on the cluster: ${refusal} (ask another node's agent)`,
    );
  switch (req.op) {
    case 'status':
      return (await clusterStatus(agent, !req.brief)) satisfies ClusterStatus;
    case 'migrate': {
      const spec = agent.spec;
      if (!spec.vservers[req.vserver])
        throw new UserError(`no vserver named "${req.vserver}" in the cluster`);
      if (!fullNodes(spec).includes(req.node))
        throw new UserError(
          `"${req.node}" is not a node that can run vservers (nodes: ${fullNodes(spec).join(', ')})`,
        );
      const id = await agent.store.putRequest(
        {
          version: RECORD_VERSION,
          at: Date.now(),
          by: agent.o.node,
          event: { kind: 'migrate', vserver: req.vserver, node: req.node },
        },
        timeoutMs,
      );
      agent.operatorEvent(`${req.vserver}: migrate to ${req.node} requested by ${who(agent, req.by)}`);
      return { id };
    }
    case 'clear': {
      if (!agent.spec.vservers[req.vserver])
        throw new UserError(`no vserver named "${req.vserver}" in the cluster`);
      const id = await agent.store.putRequest(
        {
          version: RECORD_VERSION,
          at: Date.now(),
          by: agent.o.node,
          event: { kind: 'clear', vserver: req.vserver },
        },
        timeoutMs,
      );
      agent.operatorEvent(`${req.vserver}: clear failures requested by ${who(agent, req.by)}`);
      return { id };
    }
    case 'standby': {
      if (!fullNodes(agent.spec).includes(req.node))
        throw new UserError(
          `"${req.node}" is not a node that runs vservers (nodes: ${fullNodes(agent.spec).join(', ')})`,
        );
      const by = who(agent, req.by);
      await agent.store.setSetting(
        agent.store.keys.standby(req.node),
        req.on ? { version: RECORD_VERSION, at: Date.now(), by } : null,
        timeoutMs,
      );
      agent.operatorEvent(
        req.on
          ? `${req.node}: standby on, by ${by}: its vservers move off one at a time`
          : `${req.node}: standby off, by ${by}: it may run vservers again (they move back only with failback)`,
      );
      return { node: req.node, standby: req.on };
    }
    case 'maintenance': {
      const by = who(agent, req.by);
      await agent.store.setSetting(
        agent.store.keys.maintenance,
        req.on ? { version: RECORD_VERSION, at: Date.now(), by } : null,
        timeoutMs,
      );
      agent.operatorEvent(
        req.on
          ? `maintenance on, by ${by}: the manager observes and decides nothing; nodes keep running what runs and still fence on lease loss`
          : `maintenance off, by ${by}: the manager decides again`,
      );
      return { maintenance: req.on };
    }
    case 'node-remove':
      return removeNode(agent, req.node, who(agent, req.by), req.commit);
    case 'node-add':
      return addNode(agent, req.node, req.addresses, req.role, who(agent, req.by));
    case 'apply':
      return apply(agent, req.yaml, req.file, req.dryRun);
    case 'events':
      return agent.store.events(req.limit, timeoutMs, req.since);
    case 'links':
      return meshReportOf(agent);
    case 'volumes':
      return volumesOf(await clusterStatus(agent, false), agent.spec.vservers) satisfies VolumesAnswer;
    case 'failovers': {
      const { events } = await agent.store.events(req.limit ?? 5000, timeoutMs);
      return { failovers: failoversFrom(events) };
    }
    case 'backup-now':
      return backupNow(agent, req.vserver, who(agent, req.by), timeoutMs);
    case 'token-create': {
      const made = await tokensOf(agent.store.client, agent.spec.cluster).create(
        req.name,
        req.scope,
        who(agent, req.by),
      );
      agent.operatorEvent(`token ${req.name} (${req.scope}) created by ${who(agent, req.by)}`);
      return made;
    }
    case 'token-list':
      return { tokens: await tokensOf(agent.store.client, agent.spec.cluster).list() };
    case 'token-revoke':
      await tokensOf(agent.store.client, agent.spec.cluster).revoke(req.name);
      agent.operatorEvent(`token ${req.name} revoked by ${who(agent, req.by)}`);
      return { name: req.name, revoked: true };
  }
}

/** What `backup-now` answers. */
export interface BackupNowAnswer {
  vserver: string;
  /** The node that runs the vserver, which picks the request up. */
  node: string;
  requestedAt: number;
}

/** Refused (nothing written) unless the vserver has a backup schedule, runs somewhere and no run of it is on. */
async function backupNow(
  agent: Agent,
  vserver: string,
  by: string,
  timeoutMs: number,
): Promise<BackupNowAnswer> {
  const spec = agent.spec;
  const snap = agent.view().snapshot;
  if (!spec.vservers[vserver] || snap?.config?.retired[vserver])
    throw new UserError(`no vserver named "${vserver}" in the cluster`);
  if (!spec.backups[vserver])
    throw new UserError(
      `${vserver} has no backup configuration (cluster.yaml: vservers.${vserver}.backup; docs/backup.md)`,
    );
  const node = snap?.state?.table[vserver]?.node;
  if (!node) throw new UserError(`${vserver} runs nowhere now: a backup is made by the node that runs it`);
  const a = snap?.backups[vserver]?.attempt;
  if (a && a.finishedAt === undefined && snap?.nodes[a.node])
    throw new UserError(
      `a backup of ${vserver} is running on ${a.node} since ${new Date(a.startedAt).toISOString()}`,
    );
  const pending = snap?.backupNow[vserver];
  if (pending)
    throw new UserError(
      `a backup of ${vserver} was already requested by ${pending.by} at ${new Date(pending.at).toISOString()}`,
    );
  const requestedAt = Date.now();
  await agent.store.requestBackup(vserver, { version: RECORD_VERSION, at: requestedAt, by }, timeoutMs);
  agent.operatorEvent(`${vserver}: backup now requested by ${by} (on ${node})`);
  return { vserver, node, requestedAt };
}

function who(agent: Agent, user: string | undefined): string {
  return `${user ?? 'an operator'} on ${agent.o.node}`;
}

/** Validates, checks what may change, and stores the configuration (unless dry-run). */
async function apply(agent: Agent, yaml: string, file: string, dryRun: boolean): Promise<ApplyResult> {
  const next = parseClusterConfig(yaml, file);
  const cur = agent.boot;
  refuseRestartOnly(
    cur,
    next,
    file,
    agent.snapshot?.config ? { spec: agent.stored, copy: agent.paths.appliedCopy } : undefined,
  );
  // As stored: a removed node is still in its replicas (`node remove` marks it, the yaml keeps it).
  const before = agent.snapshot?.config ? agent.stored : undefined;
  const names = (s: ClusterSpec | undefined) => new Set(Object.keys(s?.vservers ?? {}));
  const retiredBefore = new Set(Object.keys(agent.snapshot?.config?.retired ?? {}));
  const added = [...names(next)].filter((v) => !names(before).has(v) || retiredBefore.has(v));
  const removed = [...names(before)].filter((v) => !names(next).has(v) && !retiredBefore.has(v));
  const changed = [...names(next)].filter(
    (v) => names(before).has(v) && JSON.stringify(before?.vservers[v]) !== JSON.stringify(next.vservers[v]),
  );
  for (const v of changed) {
    const a = before!.vservers[v]!.volume;
    const b = next.vservers[v]!.volume;
    if (JSON.stringify(a) !== JSON.stringify(b))
      throw new UserError(
        `${file}: vservers.${v}.volume: a volume's size, filesystem, replicas and port cannot change once created`,
      );
  }
  // Removed vservers stay known, stopped, with their data; one defined again is no longer retired.
  const retired = { ...(agent.snapshot?.config?.retired ?? {}) };
  for (const v of removed) if (before?.vservers[v]) retired[v] = before.vservers[v];
  for (const v of names(next)) delete retired[v];
  if (!dryRun)
    await agent.store.putConfig(
      {
        version: RECORD_VERSION,
        yaml,
        file,
        appliedAt: Date.now(),
        appliedBy: agent.o.node,
        retired,
        // Membership is changed by `node add|remove` only (src/agent/membership/).
        removed: agent.snapshot?.config?.removed ?? {},
      },
      2000,
    );
  return { stored: !dryRun, summary: describeSpec(next), added, removed, changed };
}

/**
 * Nodes, etcd, credentials and timing are read by the agents at start: `apply` cannot change them.
 * The nodes are those stored (`node add` may have appended one the agents' own files lack).
 */
function refuseRestartOnly(
  cur: ClusterSpec,
  next: ClusterSpec,
  file: string,
  stored?: { spec: ClusterSpec; copy: string },
): void {
  if (stored && JSON.stringify(stored.spec.nodes) !== JSON.stringify(next.nodes))
    throw new UserError(
      `${file}: nodes: differ from the cluster's (cvserver node add|remove change them; the stored cluster.yaml is in ${stored.copy} on every node)`,
    );
  const fields: [string, unknown, unknown][] = [
    ['cluster', cur.cluster, next.cluster],
    ...(stored ? [] : [['nodes', cur.nodes, next.nodes] as [string, unknown, unknown]]),
    ['etcd', cur.etcd, next.etcd],
    ['timing', cur.timing, next.timing],
    ['membership', cur.membership, next.membership],
    ['http', cur.http, next.http],
    ['secret_file', cur.secret_file, next.secret_file],
    ['tls_dir', cur.tls_dir, next.tls_dir],
  ];
  for (const [field, a, b] of fields)
    if (JSON.stringify(a) !== JSON.stringify(b))
      throw new UserError(
        `${file}: ${field}: differs from the agents' configuration; it is read at agent start (change it in every node's file and restart the agents)`,
      );
}
