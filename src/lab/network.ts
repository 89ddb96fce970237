/**
 * The lab's network: a hub namespace with one bridge per link (br0, br1), one namespace per node
 * whose uplink veth is enslaved to a bridge of its own (lan0, lan1) that carries the node's
 * address — so a vserver attached to lanN inside the node is on the lab LAN — and a veth from the
 * host's root namespace into the hub (<subnet>.254/24) so the host reaches the lab. No forwarding
 * and no default routes anywhere: nothing routes beyond the lab. Every step is idempotent.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { UserError } from '../lib/errors.ts';
import {
  hubBridge,
  hubHostPort,
  type Lab,
  type LabNode,
  namespacePrefix,
  nodeBridge,
  nodeUplink,
} from './layout.ts';

const NETNS_DIR = '/run/netns';

interface Result {
  status: number;
  stdout: string;
  stderr: string;
}

function exec(cmd: string, args: string[]): Result {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return {
    status: r.status ?? -1,
    stdout: r.stdout ?? '',
    stderr: (r.stderr ?? '').trim() || r.error?.message || '',
  };
}

function must(cmd: string, args: string[]): string {
  const r = exec(cmd, args);
  if (r.status !== 0)
    throw new UserError(`lab network: ${cmd} ${args.join(' ')}: ${r.stderr || `exit ${r.status}`}`);
  return r.stdout;
}

const ipIn = (ns: string | undefined, ...args: string[]): string[] => (ns ? ['-n', ns, ...args] : args);

export function netnsPath(ns: string): string {
  return `${NETNS_DIR}/${ns}`;
}
export function netnsExists(ns: string): boolean {
  return existsSync(netnsPath(ns));
}
function linkExists(ns: string | undefined, dev: string): boolean {
  return exec('ip', ipIn(ns, 'link', 'show', 'dev', dev)).status === 0;
}

function ensureNetns(ns: string): void {
  if (!netnsExists(ns)) must('ip', ['netns', 'add', ns]);
  must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  // A new namespace starts with forwarding off; say so anyway: the lab routes nothing.
  must('nsenter', [`--net=${netnsPath(ns)}`, 'sysctl', '-qw', 'net.ipv4.ip_forward=0']);
}

function ensureBridge(ns: string, bridge: string): void {
  if (!linkExists(ns, bridge)) must('ip', ['-n', ns, 'link', 'add', bridge, 'type', 'bridge']);
  must('ip', ['-n', ns, 'link', 'set', bridge, 'up']);
}

/** Refuses a subnet the host already uses elsewhere (the host veth would shadow or clash with it). */
export function checkSubnetFree(lab: Lab): void {
  const ours = new Set(lab.hostInterfaces);
  const lines = exec('ip', ['-4', '-o', 'addr', 'show']).stdout.split('\n');
  for (const subnet of lab.subnets) {
    for (const line of lines) {
      const m = /^\d+:\s+(\S+)\s+inet\s+(\d+\.\d+\.\d+)\.\d+\//.exec(line);
      if (m && m[2] === subnet && !ours.has(m[1]!))
        throw new UserError(
          `--subnet: ${subnet}.0/24 is already used on this host (interface ${m[1]}); choose another with --subnet`,
        );
    }
  }
}

/** Builds (or completes) the whole network of the lab. */
export function buildNetwork(lab: Lab): void {
  checkSubnetFree(lab);
  ensureNetns(lab.hub);
  for (let l = 0; l < lab.links; l++) {
    ensureBridge(lab.hub, hubBridge(l));
    const hostIf = lab.hostInterfaces[l]!;
    if (!linkExists(undefined, hostIf)) {
      // A leftover peer in the hub would make the add fail: remove it first.
      if (linkExists(lab.hub, hubHostPort(l))) must('ip', ['-n', lab.hub, 'link', 'del', hubHostPort(l)]);
      must('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', hubHostPort(l), 'netns', lab.hub]);
    }
    must('ip', ['-n', lab.hub, 'link', 'set', hubHostPort(l), 'master', hubBridge(l), 'up']);
    must('ip', ['addr', 'replace', `${lab.hostAddresses[l]}/24`, 'dev', hostIf]);
    must('ip', ['link', 'set', hostIf, 'up']);
  }
  for (const node of lab.nodes) buildNode(lab, node);
}

function buildNode(lab: Lab, node: LabNode): void {
  ensureNetns(node.namespace);
  for (let l = 0; l < lab.links; l++) {
    const hubIf = node.hubInterfaces[l]!;
    const uplink = nodeUplink(l);
    if (!linkExists(lab.hub, hubIf)) {
      if (linkExists(node.namespace, uplink)) must('ip', ['-n', node.namespace, 'link', 'del', uplink]);
      must('ip', [
        'link',
        'add',
        hubIf,
        'netns',
        lab.hub,
        'type',
        'veth',
        'peer',
        uplink,
        'netns',
        node.namespace,
      ]);
    }
    must('ip', ['-n', lab.hub, 'link', 'set', hubIf, 'master', hubBridge(l), 'up']);
    ensureBridge(node.namespace, nodeBridge(l));
    must('ip', ['-n', node.namespace, 'link', 'set', uplink, 'master', nodeBridge(l), 'up']);
    // The bridge's MAC pinned to its uplink's: else it follows the lowest MAC among its ports, and a
    // vserver's veth joining or leaving changes the node's own MAC (stale ARP entries everywhere).
    const mac = (
      JSON.parse(must('ip', ['-j', '-n', node.namespace, 'link', 'show', 'dev', uplink])) as {
        address: string;
      }[]
    )[0]!.address;
    must('ip', ['-n', node.namespace, 'link', 'set', 'dev', nodeBridge(l), 'address', mac]);
    must('ip', ['-n', node.namespace, 'addr', 'replace', `${node.addresses[l]}/24`, 'dev', nodeBridge(l)]);
  }
}

/** Up or down: the hub side of every uplink of the node (a switch port, as far as the node can tell). */
export function setNodeLinks(lab: Lab, node: LabNode, up: boolean, links?: number[]): void {
  for (const [i, hubIf] of node.hubInterfaces.entries()) {
    if (links && !links.includes(i)) continue;
    if (!linkExists(lab.hub, hubIf))
      throw new UserError(
        `lab ${lab.name}: link ${hubIf} of node ${node.name} is missing (run lab up to repair)`,
      );
    must('ip', ['-n', lab.hub, 'link', 'set', hubIf, up ? 'up' : 'down']);
  }
}

/** Per link: is the hub side administratively up? (undefined: missing) */
export function nodeLinksUp(lab: Lab, node: LabNode): (boolean | undefined)[] {
  return node.hubInterfaces.map((hubIf) => {
    const r = exec('ip', ['-j', '-n', lab.hub, 'link', 'show', 'dev', hubIf]);
    if (r.status !== 0) return undefined;
    const [info] = JSON.parse(r.stdout) as { flags?: string[] }[];
    return info?.flags?.includes('UP') ?? false;
  });
}

export function hostInterfaceExists(dev: string): boolean {
  return linkExists(undefined, dev);
}

/**
 * The namespaces of lab `name` that exist: those lab.json names, and (when it is missing or partial)
 * the ones `lab up` would have made (hub, n1..n9, w) — never another lab's.
 */
export function labNamespaces(name: string, lab?: Lab): string[] {
  const known = new Set(lab ? [lab.hub, ...lab.nodes.map((n) => n.namespace)] : []);
  const prefix = namespacePrefix(name);
  const own = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')}(hub|n[1-9]|w)$`);
  const present = existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR) : [];
  return present.filter((ns) => known.has(ns) || own.test(ns));
}

/** Deletes the namespaces (their interfaces go with them) and the host veths. Missing parts are fine. */
export function removeNetwork(namespaces: string[], hostInterfaces: string[]): void {
  for (const dev of hostInterfaces) if (linkExists(undefined, dev)) exec('ip', ['link', 'del', dev]);
  for (const ns of namespaces) if (netnsExists(ns)) must('ip', ['netns', 'del', ns]);
}
