/**
 * What a lab is: its nodes, namespaces, interfaces and addresses, planned from a few options
 * (pure) and kept in `<dir>/lab.json`, so every `lab` subcommand works from a fresh process.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../lib/errors.ts';
import { readJsonOr, writeJsonAtomic } from '../lib/json-file.ts';

export type NodeRole = 'full' | 'witness';

export interface LabNode {
  name: string;
  role: NodeRole;
  /** Named network namespace (/run/netns/<namespace>). */
  namespace: string;
  /** One per link: <subnet[i]>.<11 + index>. */
  addresses: string[];
  /** The node's CVSERVER_STATE_DIR. */
  stateDir: string;
  /** The hub-side end of the node's uplink veth, one per link (downing it cuts the node off). */
  hubInterfaces: string[];
  /** The node's main process (the agent), as started by `lab up` / `lab start`. */
  pid?: number;
  /** Its start time in clock ticks since boot (/proc/PID/stat field 22), so a reused pid is not mistaken for it. */
  pidStart?: number;
}

export interface Lab {
  version: 1;
  name: string;
  dir: string;
  links: 1 | 2;
  /** "A.B.C" per link. */
  subnets: string[];
  hub: string;
  /** Root-namespace ends of the host's veths (one per link), addressed <subnet>.254/24. */
  hostInterfaces: string[];
  hostAddresses: string[];
  nodes: LabNode[];
  /** The node's main command; {node}, {config}, {dir}, {stateDir}, {root} are replaced per node. */
  nodeCommand: string[];
  demo: { vserver: string; address: string; url: string };
  /** The cluster's lease TTL (s); absent in labs made before it could be chosen: 2. */
  leaseTtl?: number;
}

export interface LabOptions {
  name?: string;
  dir?: string;
  nodes?: number;
  witness?: boolean;
  /** "A.B.C" of the first link; the second link (links 2) uses A.(B+1).C unless `subnets` says otherwise. */
  subnet?: string;
  subnets?: string[];
  links?: 1 | 2;
  /** The cluster's lease TTL in whole seconds (default 2: fast failover on one quiet machine). */
  leaseTtl?: number;
  nodeCommand?: string[];
}

export const DEFAULT_LAB_NAME = 'lab';
export const DEFAULT_SUBNET = '10.77.0';
export const LAB_LEASE_TTL = 2;
export const LAB_BASE_DIR = '/var/lib/cvserver-lab';
/** The agent, run in the node's namespace with its state dir (see startNode). */
export const AGENT_COMMAND = ['{root}/bin/cvserver', 'agent', '--config', '{config}', '--node', '{node}'];

// Interface names are at most 15 characters: cvl<name>h1 leaves 10 for the name.
const NAME = /^[a-z0-9][a-z0-9-]{0,9}$/;
const NODE_HOST_OFFSET = 11;
export const HOST_OCTET = 254;
export const DEMO_OCTET = 100;

export function labDir(name: string, dir?: string): string {
  return dir ?? join(LAB_BASE_DIR, name);
}
export function labFile(dir: string): string {
  return join(dir, 'lab.json');
}
export function clusterFile(lab: Pick<Lab, 'dir'>): string {
  return join(lab.dir, 'cluster.yaml');
}
export function agentLog(node: Pick<LabNode, 'stateDir'>): string {
  return join(node.stateDir, 'agent.log');
}

export function checkLabName(name: string): void {
  if (!NAME.test(name))
    throw new UserError(
      `--name: "${name}" is not a lab name (lowercase letters, digits and dashes, at most 10, starting with a letter or digit)`,
    );
}

export function checkSubnet(subnet: string, what = '--subnet'): void {
  const parts = subnet.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255))
    throw new UserError(`${what}: "${subnet}" is not the first three octets of an IPv4 /24 (e.g. 10.77.0)`);
}

/** The second link's subnet by default: the next value of the second octet (10.77.0 -> 10.78.0). */
export function nextSubnet(subnet: string): string {
  const [a, b, c] = subnet.split('.').map(Number) as [number, number, number];
  return `${a}.${(b + 1) % 256}.${c}`;
}

export function namespacePrefix(name: string): string {
  return `cvl-${name}-`;
}
export function hubNamespace(name: string): string {
  return `${namespacePrefix(name)}hub`;
}
/** Host veth ends: cvl<name>h, then cvl<name>h1 for a second link. */
export function hostInterfaceName(name: string, link: number): string {
  return `cvl${name}h${link === 0 ? '' : link}`;
}
/** Bridge names: br<i> in the hub, lan<i> in each node; the node's uplink is up<i>; the host's peer host<i>. */
export const hubBridge = (link: number): string => `br${link}`;
export const nodeBridge = (link: number): string => `lan${link}`;
export const nodeUplink = (link: number): string => `up${link}`;
export const hubHostPort = (link: number): string => `host${link}`;

/** Pure: the lab these options describe (nothing is created). */
export function planLab(o: LabOptions = {}): Lab {
  const name = o.name ?? DEFAULT_LAB_NAME;
  checkLabName(name);
  const links = o.links ?? 1;
  const first = o.subnet ?? o.subnets?.[0] ?? DEFAULT_SUBNET;
  const subnets = links === 1 ? [first] : [first, o.subnets?.[1] ?? nextSubnet(first)];
  for (const [i, s] of subnets.entries()) checkSubnet(s, i === 0 ? '--subnet' : 'subnets[1]');
  if (new Set(subnets).size !== subnets.length) throw new UserError('the two links need different subnets');
  const leaseTtl = o.leaseTtl ?? LAB_LEASE_TTL;
  if (!Number.isInteger(leaseTtl) || leaseTtl < 2 || leaseTtl > 60)
    throw new UserError(`--lease-ttl: expected whole seconds from 2 to 60, got ${o.leaseTtl}`);
  const count = o.nodes ?? 3;
  if (o.witness && count !== 2)
    throw new UserError('--witness goes with --nodes 2 (two full nodes and a witness)');
  if (!o.witness && (count < 1 || count > 9 || !Number.isInteger(count)))
    throw new UserError(`--nodes: expected 1 to 9 nodes, got ${count}`);
  const dir = labDir(name, o.dir);
  const roles: [string, NodeRole][] = Array.from({ length: count }, (_, i) => [`n${i + 1}`, 'full']);
  if (o.witness) roles.push(['w', 'witness']);
  const nodes = roles.map(
    ([node, role], i): LabNode => ({
      name: node,
      role,
      namespace: `${namespacePrefix(name)}${node}`,
      addresses: subnets.map((s) => `${s}.${NODE_HOST_OFFSET + i}`),
      stateDir: join(dir, 'nodes', node),
      hubInterfaces: subnets.map((_, l) => `${node}-l${l}`),
    }),
  );
  const demoAddress = `${subnets[0]}.${DEMO_OCTET}`;
  return {
    version: 1,
    name,
    dir,
    links,
    subnets,
    hub: hubNamespace(name),
    hostInterfaces: subnets.map((_, l) => hostInterfaceName(name, l)),
    hostAddresses: subnets.map((s) => `${s}.${HOST_OCTET}`),
    nodes,
    nodeCommand: o.nodeCommand ?? AGENT_COMMAND,
    demo: { vserver: 'demo', address: demoAddress, url: `http://${demoAddress}/` },
    leaseTtl,
  };
}

/** The same lab? (`lab up` on an existing lab only completes it; a different shape needs `lab down` first.) */
export function sameShape(a: Lab, b: Lab): boolean {
  const shape = (l: Lab) =>
    JSON.stringify([
      l.name,
      l.dir,
      l.links,
      l.subnets,
      l.nodes.map((n) => [n.name, n.role]),
      l.nodeCommand,
      l.leaseTtl ?? LAB_LEASE_TTL,
    ]);
  return shape(a) === shape(b);
}

export function readLab(dir: string): Lab | undefined {
  return readJsonOr<Lab>(labFile(dir));
}

export function mustLab(name: string, dir?: string): Lab {
  const d = labDir(name, dir);
  const lab = readLab(d);
  if (!lab)
    throw new UserError(
      `no lab "${name}" (${labFile(d)} is missing; run cvserver lab up${name === DEFAULT_LAB_NAME ? '' : ` --name ${name}`})`,
    );
  return lab;
}

export function writeLab(lab: Lab): void {
  if (!existsSync(lab.dir)) mkdirSync(lab.dir, { recursive: true });
  writeJsonAtomic(labFile(lab.dir), lab);
}

export function mustNode(lab: Lab, node: string): LabNode {
  const n = lab.nodes.find((x) => x.name === node);
  if (!n)
    throw new UserError(
      `lab ${lab.name} has no node "${node}" (nodes: ${lab.nodes.map((x) => x.name).join(', ')})`,
    );
  return n;
}

/** The node's command line with its placeholders filled in. */
export function nodeCommandLine(lab: Lab, node: LabNode, root: string): string[] {
  const values: Record<string, string> = {
    node: node.name,
    config: clusterFile(lab),
    dir: lab.dir,
    stateDir: node.stateDir,
    root,
  };
  return lab.nodeCommand.map((arg) =>
    arg.replace(/\{(node|config|dir|stateDir|root)\}/g, (_, k: string) => values[k]!),
  );
}
