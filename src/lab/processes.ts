/**
 * A lab node's processes: its main process (the agent) started in the node's namespace, and the
 * power cut — every process of the node dies at once: all processes in the node's network
 * namespace, and every process of the containers started from its state dir (their cgroups, and
 * anything else sitting in those containers' network namespaces, e.g. a health probe).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../lib/errors.ts';
import { agentLog, type Lab, type LabNode, nodeCommandLine } from './layout.ts';
import { netnsPath } from './network.ts';

const CGROUP_ROOT = '/sys/fs/cgroup';

/** "net:[4026531840]" of a named namespace, as /proc/PID/ns/net reads. */
function netnsId(ns: string): string | undefined {
  try {
    return `net:[${statSync(netnsPath(ns)).ino}]`;
  } catch {
    return undefined;
  }
}

function procNetns(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

function allPids(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

/** Start time of a process (clock ticks since boot), to tell it from a later process with the same pid. */
export function processStart(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie, and (when given) the same process that was started. */
export function processAlive(pid: number | undefined, start?: number): boolean {
  if (!pid) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return false;
  } catch {
    return false;
  }
  return start === undefined || processStart(pid) === start;
}

/**
 * The cgroup parent of the vservers of a state dir, as src/vserver/store.ts cgroupsPath() makes it
 * ("/cvserver-<first 8 hex of sha256(state dir)>/<vserver>"), so the lab finds a node's containers.
 */
export function vserverCgroupParent(stateDir: string): string {
  return `cvserver-${createHash('sha256').update(stateDir).digest('hex').slice(0, 8)}`;
}

/** That parent in every mounted hierarchy (v1 controllers, the v2 unified tree, or a pure v2 root). */
export function nodeCgroupDirs(stateDir: string): string[] {
  const parent = vserverCgroupParent(stateDir);
  const dirs: string[] = [];
  if (existsSync(join(CGROUP_ROOT, parent))) dirs.push(join(CGROUP_ROOT, parent));
  if (existsSync(CGROUP_ROOT))
    for (const ctl of readdirSync(CGROUP_ROOT)) {
      const d = join(CGROUP_ROOT, ctl, parent);
      if (existsSync(join(d, 'cgroup.procs'))) dirs.push(d);
    }
  return dirs;
}

/** Every cgroup directory at or below `dir`, deepest first. */
function cgroupTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: string[] = [];
    try {
      entries = readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(d, e));
    out.push(d);
  };
  walk(dir);
  return out;
}

function cgroupPids(dirs: string[]): number[] {
  const pids = new Set<number>();
  for (const dir of dirs)
    for (const d of cgroupTree(dir)) {
      try {
        for (const l of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.add(Number(l));
      } catch {}
    }
  return [...pids];
}

function writeQuietly(file: string, value: string): boolean {
  try {
    writeFileSync(file, value);
    return true;
  } catch {
    return false;
  }
}

/** Freezes (v1 freezer.state, v2 cgroup.freeze) or thaws the containers of a node: nothing in them runs meanwhile. */
function setFrozen(dirs: string[], frozen: boolean): void {
  for (const d of dirs) {
    if (existsSync(join(d, 'freezer.state')))
      writeQuietly(join(d, 'freezer.state'), frozen ? 'FROZEN' : 'THAWED');
    else if (existsSync(join(d, 'cgroup.freeze'))) writeQuietly(join(d, 'cgroup.freeze'), frozen ? '1' : '0');
  }
}

/** Every process of a node now: in its namespace, in its containers' cgroups, in its containers' namespaces. */
export function nodePids(node: LabNode): number[] {
  const cgroups = nodeCgroupDirs(node.stateDir);
  return collect(node, cgroups);
}

function collect(node: LabNode, cgroups: string[]): number[] {
  const hostNet = procNetns(1);
  const ids = new Set<string>();
  const nodeNet = netnsId(node.namespace);
  if (nodeNet) ids.add(nodeNet);
  const inCgroups = cgroupPids(cgroups);
  for (const pid of inCgroups) {
    const id = procNetns(pid);
    if (id) ids.add(id);
  }
  // Never the host's namespace, whatever a container shares.
  if (hostNet) ids.delete(hostNet);
  const pids = new Set(inCgroups);
  for (const pid of allPids()) {
    const id = procNetns(pid);
    if (id && ids.has(id)) pids.add(pid);
  }
  pids.delete(process.pid);
  pids.delete(process.ppid);
  return [...pids].filter((p) => processAlive(p));
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A power cut: freeze the node's containers and SIGSTOP everything else of the node (re-scanning
 * until nothing new appears), run `whileFrozen` (links down), then SIGKILL all, thaw, and wait
 * until nothing of the node is left. Returns the pids killed.
 */
export async function killNodeProcesses(
  node: LabNode,
  whileFrozen: () => void = () => {},
): Promise<number[]> {
  const cgroups = nodeCgroupDirs(node.stateDir);
  setFrozen(cgroups, true);
  const seen = new Set<number>();
  let failed: unknown;
  try {
    for (let round = 0; round < 20; round++) {
      const fresh = collect(node, cgroups).filter((p) => !seen.has(p));
      if (fresh.length === 0) break;
      for (const p of fresh) {
        seen.add(p);
        signal(p, 'SIGSTOP');
      }
    }
    try {
      whileFrozen();
    } catch (err) {
      failed = err;
    }
    for (const p of seen) signal(p, 'SIGKILL');
  } finally {
    // A frozen (v1) task only dies once thawed.
    setFrozen(cgroups, false);
  }
  const deadline = Date.now() + 10_000;
  for (;;) {
    const left = collect(node, cgroups);
    if (left.length === 0) break;
    if (Date.now() > deadline)
      throw new UserError(
        `node ${node.name}: processes ${left.join(' ')} survived SIGKILL (stuck in the kernel?)`,
      );
    for (const p of left) {
      seen.add(p);
      signal(p, 'SIGKILL');
    }
    await sleep(50);
  }
  if (failed) throw failed;
  return [...seen].sort((a, b) => a - b);
}

/** Removes the (now empty) cgroups of the node's containers (rmdir: cgroupfs removes only empty groups). */
export function removeNodeCgroups(node: LabNode): void {
  for (const dir of nodeCgroupDirs(node.stateDir))
    for (const d of cgroupTree(dir)) {
      try {
        rmdirSync(d);
      } catch {}
    }
}

export interface StartedNode {
  pid: number;
  pidStart: number | undefined;
}

/**
 * Starts the node's main process: `nsenter --net=/run/netns/<ns> CMD...` (nsenter execs CMD, so the
 * pid is the command's), detached, with CVSERVER_STATE_DIR=<state dir> and the project's bin/ first
 * on PATH, stdout and stderr appended to <state dir>/agent.log. The host's mount namespace is kept:
 * the node's mounts stay visible to the host, which cleans them up.
 */
/** What a node's processes run with: its state dir, the lab's names, the project's `cvserver` first on PATH. */
export function nodeEnv(lab: Lab, node: LabNode, root: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CVSERVER_STATE_DIR: node.stateDir,
    CVSERVER_LAB: lab.name,
    CVSERVER_LAB_NODE: node.name,
    PATH: `${join(root, 'bin')}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
  };
}

/** `extraArgs`: appended to the node's command (e.g. a node joining a running cluster). */
export function spawnNode(lab: Lab, node: LabNode, root: string, extraArgs: string[] = []): StartedNode {
  mkdirSync(node.stateDir, { recursive: true });
  const cmd = [...nodeCommandLine(lab, node, root), ...extraArgs];
  const log = openSync(agentLog(node), 'a');
  try {
    const child = spawn('nsenter', [`--net=${netnsPath(node.namespace)}`, ...cmd], {
      detached: true,
      stdio: ['ignore', log, log],
      env: nodeEnv(lab, node, root),
    });
    child.on('error', () => {});
    child.unref();
    if (!child.pid) throw new UserError(`node ${node.name}: could not start nsenter`);
    return { pid: child.pid, pidStart: processStart(child.pid) };
  } finally {
    closeSync(log);
  }
}
