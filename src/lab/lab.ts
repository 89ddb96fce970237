/**
 * The lab's operations (imperative shell over layout/network/processes/storage): up, kill, cut,
 * heal, start, exec, status, down. Each works from lab.json alone, so from a fresh process.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../lib/errors.ts';
import { writeFileAtomic } from '../lib/json-file.ts';
import { labClusterYaml } from './demo.ts';
import { clusterHooks, type LabDashboard, type LabHooks, readDashboard } from './hooks.ts';
import {
  agentLog,
  clusterFile,
  hostInterfaceName,
  type Lab,
  type LabNode,
  type LabOptions,
  labDir,
  labFile,
  mustNode,
  planLab,
  readLab,
  sameShape,
  writeLab,
} from './layout.ts';
import {
  buildNetwork,
  checkSubnetFree,
  hostInterfaceExists,
  labNamespaces,
  netnsExists,
  netnsPath,
  nodeLinksUp,
  removeNetwork,
  setNodeLinks,
} from './network.ts';
import {
  killNodeProcesses,
  nodeEnv,
  nodePids,
  processAlive,
  removeNodeCgroups,
  spawnNode,
} from './processes.ts';
import { cleanupStorage, mountsUnder, type StorageCleanup } from './storage.ts';

/** The project's root (bin/cvserver lives there). */
export const ROOT = join(import.meta.dirname, '..', '..');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new UserError('the lab needs root (network namespaces, mounts, cgroups)');
}

function logTail(node: LabNode): string {
  try {
    return readFileSync(agentLog(node), 'utf8').trim().split('\n').slice(-3).join(' / ');
  } catch {
    return '';
  }
}

/** Builds the lab (or completes a half-built one), writes cluster.yaml, starts every node not running. */
export async function labUp(o: LabOptions, hooks: LabHooks = clusterHooks, root = ROOT): Promise<Lab> {
  requireRoot();
  const planned = planLab(o);
  const existing = readLab(planned.dir);
  if (existing && !sameShape(existing, planned))
    throw new UserError(
      `lab ${planned.name} already exists in ${planned.dir} with other settings (nodes ${existing.nodes.map((n) => `${n.name}:${n.role}`).join(' ')}, subnet ${existing.subnets.join(',')}, node command ${JSON.stringify(existing.nodeCommand.join(' '))}); run cvserver lab down${planned.name === 'lab' ? '' : ` --name ${planned.name}`} first`,
    );
  const lab = existing ?? planned;
  checkSubnetFree(lab);
  // lab.json first: whatever fails later, `lab down` knows what to remove.
  writeLab(lab);
  buildNetwork(lab);
  for (const n of lab.nodes) mkdirSync(n.stateDir, { recursive: true });
  if (!existsSync(clusterFile(lab))) writeFileAtomic(clusterFile(lab), labClusterYaml(lab));
  await hooks.init(lab);
  const started: LabNode[] = [];
  for (const node of lab.nodes) {
    if (processAlive(node.pid, node.pidStart)) continue;
    await bootNode(lab, node, root);
    started.push(node);
  }
  await checkStarted(lab, started);
  await hooks.apply(lab);
  await hooks.dashboard(lab);
  await hooks.waitForDemo(lab);
  return lab;
}

/** A node that exits at once (a bad command, a bad config) is an error worth seeing now. */
async function checkStarted(lab: Lab, nodes: LabNode[]): Promise<void> {
  if (nodes.length === 0) return;
  await sleep(300);
  const dead = nodes.filter((n) => !processAlive(n.pid, n.pidStart));
  if (dead.length > 0)
    throw new UserError(
      dead
        .map(
          (n) => `node ${n.name}: its main process exited at once (${agentLog(n)}: ${logTail(n) || 'empty'})`,
        )
        .join('; ') +
        ` — the lab's network stays up; cvserver lab down${lab.name === 'lab' ? '' : ` --name ${lab.name}`} removes it`,
    );
}

export interface BootReport {
  node: string;
  killed: number[];
  cleanup: StorageCleanup;
  pid: number;
}

/**
 * The node boots: leftovers killed, stale mounts and loop devices cleared, links up, main process
 * started. `joining`: as a new machine joining the running cluster (after `cvserver node add`): its
 * state dir emptied (its log kept) and its agent started with `--initial-cluster-state existing`.
 */
async function bootNode(lab: Lab, node: LabNode, root: string, joining = false): Promise<BootReport> {
  if (!netnsExists(node.namespace))
    throw new UserError(
      `node ${node.name}: namespace ${node.namespace} is missing (run cvserver lab up to repair)`,
    );
  const killed = await killNodeProcesses(node);
  const cleanup = cleanupStorage(node.stateDir);
  if (joining) emptyStateDir(node);
  setNodeLinks(lab, node, true);
  const { pid, pidStart } = spawnNode(
    lab,
    node,
    root,
    joining ? ['--initial-cluster-state', 'existing'] : [],
  );
  node.pid = pid;
  node.pidStart = pidStart;
  writeLab(lab);
  return { node: node.name, killed, cleanup, pid };
}

/** A new machine's disk: nothing of an earlier life of the node but its log (mounts already cleared). */
function emptyStateDir(node: LabNode): void {
  if (mountsUnder(node.stateDir).length > 0)
    throw new UserError(`node ${node.name}: ${node.stateDir} still has mounts: not emptied`);
  for (const entry of readdirSync(node.stateDir))
    if (join(node.stateDir, entry) !== agentLog(node))
      rmSync(join(node.stateDir, entry), { recursive: true, force: true });
}

export interface StartReport extends Partial<BootReport> {
  node: string;
  alreadyRunning: boolean;
}

/** `agentOnly`: the main process only, nothing killed or cleared (a service manager restarting the agent). */
export async function labStart(
  lab: Lab,
  name: string,
  o: { agentOnly?: boolean; join?: boolean } = {},
  root = ROOT,
): Promise<StartReport> {
  requireRoot();
  const node = mustNode(lab, name);
  if (processAlive(node.pid, node.pidStart)) {
    setNodeLinks(lab, node, true);
    return { node: name, alreadyRunning: true, pid: node.pid };
  }
  if (o.agentOnly) {
    const { pid, pidStart } = spawnNode(lab, node, root);
    Object.assign(node, { pid, pidStart });
    writeLab(lab);
    await checkStarted(lab, [node]);
    return { node: name, alreadyRunning: false, pid };
  }
  const report = await bootNode(lab, node, root, !!o.join);
  await checkStarted(lab, [node]);
  return { ...report, alreadyRunning: false };
}

/**
 * A power cut: every process of the node dies at once (frozen first), its links go down. `cutAt` (ms
 * since the epoch): when every process of the node was stopped and its links went down.
 */
export async function labKill(
  lab: Lab,
  name: string,
): Promise<{ node: string; cutAt: number; killed: number[] }> {
  requireRoot();
  const node = mustNode(lab, name);
  let cutAt = 0;
  const killed = await killNodeProcesses(node, () => {
    cutAt = Date.now();
    setNodeLinks(lab, node, false);
  });
  return { node: name, cutAt, killed };
}

/** Links down (all, or only the given link numbers), processes alive. */
export function labCut(lab: Lab, name: string, links?: number[]): void {
  requireRoot();
  if (links?.some((l) => !Number.isInteger(l) || l < 0 || l >= lab.links))
    throw new UserError(`lab ${lab.name} has links 0..${lab.links - 1}`);
  setNodeLinks(lab, mustNode(lab, name), false, links);
}

/** Every link of every node up. */
export function labHeal(lab: Lab): void {
  requireRoot();
  for (const node of lab.nodes) setNodeLinks(lab, node, true);
}

/** Runs a command in the node's namespace with its state dir; stdio inherited; returns its exit code. */
export function labExec(lab: Lab, name: string, cmd: string[], root = ROOT): number {
  requireRoot();
  const node = mustNode(lab, name);
  if (cmd.length === 0)
    throw new UserError('lab exec: no command (e.g. cvserver lab exec n1 -- cvserver status)');
  if (!netnsExists(node.namespace))
    throw new UserError(`node ${name}: namespace ${node.namespace} is missing`);
  const r = spawnSync('nsenter', [`--net=${netnsPath(node.namespace)}`, ...cmd], {
    stdio: 'inherit',
    env: nodeEnv(lab, node, root),
  });
  if (r.error) throw new UserError(`lab exec: ${r.error.message}`);
  if (r.signal) return 128 + (signalNumber(r.signal) ?? 0);
  return r.status ?? 1;
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  return (constants.signals as Record<string, number>)[sig];
}

export type NodeState = 'up' | 'cut' | 'down' | 'stopped' | 'absent';

export interface NodeStatus {
  name: string;
  role: string;
  /** up: main process alive, links up; cut: links down, processes alive; down: links down, nothing alive;
   *  stopped: links up, main process gone; absent: no namespace. */
  state: NodeState;
  pid: number | null;
  pidAlive: boolean;
  processes: number;
  links: ('up' | 'down' | 'missing')[];
  addresses: string[];
  namespace: string;
  stateDir: string;
}

export interface LabStatus {
  name: string;
  dir: string;
  hub: string;
  host: { interface: string; address: string; present: boolean }[];
  demoUrl: string;
  /** The dashboard's URL and an admin token (null without a cluster, or before `lab up` made it). */
  dashboard: LabDashboard | null;
  nodes: NodeStatus[];
}

export function nodeStatus(lab: Lab, node: LabNode): NodeStatus {
  const present = netnsExists(node.namespace);
  const links = nodeLinksUp(lab, node).map((u) => (u === undefined ? 'missing' : u ? 'up' : 'down'));
  const pidAlive = processAlive(node.pid, node.pidStart);
  const processes = present ? nodePids(node).length : 0;
  const linksUp = links.every((l) => l === 'up');
  const state: NodeState = !present
    ? 'absent'
    : linksUp
      ? pidAlive
        ? 'up'
        : 'stopped'
      : processes > 0
        ? 'cut'
        : 'down';
  return {
    name: node.name,
    role: node.role,
    state,
    pid: node.pid ?? null,
    pidAlive,
    processes,
    links,
    addresses: node.addresses,
    namespace: node.namespace,
    stateDir: node.stateDir,
  };
}

export function labStatus(lab: Lab): LabStatus {
  return {
    name: lab.name,
    dir: lab.dir,
    hub: lab.hub,
    host: lab.hostInterfaces.map((dev, i) => ({
      interface: dev,
      address: `${lab.hostAddresses[i]}/24`,
      present: hostInterfaceExists(dev),
    })),
    demoUrl: lab.demo.url,
    dashboard: readDashboard(lab),
    nodes: lab.nodes.map((n) => nodeStatus(lab, n)),
  };
}

export interface DownReport {
  name: string;
  dir: string;
  killed: Record<string, number[]>;
  unmounted: string[];
  detached: string[];
  namespaces: string[];
  dirRemoved: boolean;
}

/**
 * Removes everything the lab made: every process of every node (as kill), mounts and loop devices
 * (as start), cgroups, namespaces, the host veths, the lab dir. Works from lab.json, and without it
 * from the names `lab up` uses; safe to run twice.
 */
export async function labDown(name: string, dir?: string): Promise<DownReport> {
  requireRoot();
  const d = labDir(name, dir);
  const lab = readLab(d);
  const namespaces = labNamespaces(name, lab);
  const nodes: LabNode[] = [...(lab?.nodes ?? [])];
  // Half-built without lab.json: the node namespaces found tell which nodes there were.
  for (const ns of namespaces) {
    const node = ns.slice(`cvl-${name}-`.length);
    if (node !== 'hub' && !nodes.some((n) => n.namespace === ns))
      nodes.push({
        name: node,
        role: 'full',
        namespace: ns,
        addresses: [],
        stateDir: join(d, 'nodes', node),
        hubInterfaces: [],
      });
  }
  const report: DownReport = {
    name,
    dir: d,
    killed: {},
    unmounted: [],
    detached: [],
    namespaces,
    dirRemoved: false,
  };
  for (const node of nodes) {
    report.killed[node.name] = await killNodeProcesses(node);
    const c = cleanupStorage(node.stateDir);
    report.unmounted.push(...c.unmounted);
    report.detached.push(...c.detached);
    removeNodeCgroups(node);
  }
  const rest = cleanupStorage(d);
  report.unmounted.push(...rest.unmounted);
  report.detached.push(...rest.detached);
  removeNetwork(namespaces, lab?.hostInterfaces ?? [hostInterfaceName(name, 0), hostInterfaceName(name, 1)]);
  // Never rm -r a tree that still has something mounted in it, nor a --dir that is not a lab's.
  if (existsSync(d) && (existsSync(labFile(d)) || dir === undefined)) {
    const left = mountsUnder(d);
    if (left.length > 0)
      throw new UserError(`lab down: ${left.map((m) => m.point).join(', ')} still mounted; ${d} kept`);
    rmSync(d, { recursive: true, force: true });
    report.dirRemoved = true;
  }
  return report;
}
