/**
 * bench/failover: failover in the lab (3 nodes, real agents, etcd, volumes, crun) while a client keeps
 * POSTing to the demo (500 ms timeout per request, ~50 ms apart):
 *   (a) power cuts (`lab kill`) of the node running the demo: cut → first successful POST at the demo
 *       IP, split into detect (cut → the manager's "alive -> expired"), assign, pickup (the node's
 *       "start with epoch"), promote (volume daemon "promoted"), mount ("volume-primary"), start
 *       ("vserver-started"), healthy (the node's "healthy") and http (the client's first success);
 *       every acknowledged record is checked afterwards; the node is started again and waited for
 *       until its replica is a secondary in sync;
 *   (b) planned `migrate` to the next node: its own seconds, the client's longest gap, lost records;
 *   (c) idle CPU (% of one core over 20 s, 30 s after the lab settled, from /proc/PID/stat) and RSS of
 *       each node's agent (its membership mesh on, two links per node), its etcd member, guard, volume daemons and vserver
 *       supervisor; and the mesh's heartbeats sent and received per second per node.
 * Baselines in the same run: the lease TTL (the floor of detection) and the targets (unplanned p50
 * ≤ 5 s, p99 ≤ 8 s; migrate p50 ≤ 2 s); for CPU/RSS the etcd member beside the agent and a plain idle
 * node process started by this bench. Figures only, no pass/fail.
 *   scripts/node bench/failover.ts [--trials 10] [--migrations 5] [--idle-seconds 20] [--settle-seconds 30]
 *     [--json] [--keep]
 * (root; builds lab "bench" on 10.88.0.0/24 and 10.89.0.0/24 and always takes it down at the end, also on
 * error/Ctrl-C, unless --keep: then it stays up at the end, for its logs)
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { callAgent } from '../src/agent/api.ts';
import type { MeshReport } from '../src/agent/mesh/view.ts';

const { values } = parseArgs({
  options: {
    trials: { type: 'string', default: '10' },
    migrations: { type: 'string', default: '5' },
    'idle-seconds': { type: 'string', default: '20' },
    'settle-seconds': { type: 'string', default: '30' },
    json: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
const TRIALS = Number(values.trials);
const MIGRATIONS = Number(values.migrations);
const IDLE_S = Number(values['idle-seconds']);
const SETTLE_S = Number(values['settle-seconds']);
const JSON_OUT = values.json;
/** Leaves the lab up at the end (its logs for a closer look; `cvserver lab down --name bench` after). */
const KEEP = values.keep;

const ROOT = new URL('../', import.meta.url).pathname;
const CLI = join(ROOT, 'bin/cvserver');
const NAME = 'bench';
const SUBNET = '10.88.0';
const LAB_DIR = `/var/lib/cvserver-lab/${NAME}`;
const RECORDS = `http://${SUBNET}.100/cgi-bin/records`;
const LEASE_TTL_MS = 2000; // the lab's timing.lease_ttl (src/lab/demo.ts)
const CLK_TCK = 100;

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (line: string) => {
  if (!JSON_OUT) console.log(line);
};
const note = (line: string) => process.stderr.write(`${line}\n`);

/** The CLI, asynchronously: the client loop runs in this process and must not be held up. */
async function cli(...args: string[]): Promise<string> {
  const r = await run(CLI, args, { maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' });
  return r.stdout;
}
const lab = (sub: string, ...args: string[]) => cli('lab', sub, '--name', NAME, ...args);
const onNode = async <T>(node: string, ...args: string[]): Promise<T> =>
  JSON.parse(await lab('exec', node, '--', 'cvserver', ...args)) as T;

interface Status {
  manager: string | null;
  vservers: {
    name: string;
    node: string | null;
    epoch: number;
    status: string;
    replicas: { node: string; role: string; upToDate: boolean }[];
  }[];
}
interface ClusterEvent {
  at: number;
  node: string;
  source: string;
  text: string;
}
const NODES = ['n1', 'n2', 'n3'];

async function status(from: string): Promise<Status> {
  return onNode<Status>(from, 'status', '--json');
}
async function events(from: string): Promise<ClusterEvent[]> {
  return (await onNode<{ events: ClusterEvent[] }>(from, 'events', '--json', '--limit', '500')).events;
}

/** Polls status (from any live node) until `ok` holds; returns the status. */
async function waitStatus(
  what: string,
  ok: (s: Status) => boolean,
  timeoutMs: number,
  from = NODES,
): Promise<Status> {
  const end = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    for (const n of from) {
      try {
        const s = await status(n);
        if (ok(s)) return s;
        last = JSON.stringify(s.vservers[0]);
        break;
      } catch (err) {
        last = String(err).slice(0, 200);
      }
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${last}`);
    await sleep(1000);
  }
}
const allInSync = (s: Status) => {
  const v = s.vservers[0];
  return (
    !!v &&
    v.status === 'healthy' &&
    v.replicas.every((r) => r.upToDate && (r.node === v.node ? r.role === 'primary' : r.role === 'secondary'))
  );
};

// ---------------------------------------------------------------- the client

interface Ack {
  n: number;
  at: number;
}
class Client {
  acks: Ack[] = [];
  failures = 0;
  #stop = false;
  #done: Promise<void> | undefined;
  start(): void {
    this.#done = this.#loop();
  }
  async #loop(): Promise<void> {
    let i = 0;
    while (!this.#stop) {
      const sent = Date.now();
      try {
        const r = await fetch(RECORDS, {
          method: 'POST',
          body: `bench-${i++}`,
          signal: AbortSignal.timeout(500),
        });
        const text = (await r.text()).trim();
        if (r.ok && /^\d+$/.test(text)) this.acks.push({ n: Number(text), at: Date.now() });
        else this.failures++;
      } catch {
        this.failures++;
      }
      await sleep(Math.max(0, 50 - (Date.now() - sent)));
    }
  }
  firstAckAfter(t: number): Ack | undefined {
    return this.acks.find((a) => a.at > t);
  }
  /** Longest time between two successes in [from, to]. */
  longestGap(from: number, to: number): number {
    const ts = this.acks.filter((a) => a.at >= from && a.at <= to).map((a) => a.at);
    let gap = 0;
    for (let i = 1; i < ts.length; i++) gap = Math.max(gap, ts[i]! - ts[i - 1]!);
    return gap;
  }
  async stop(): Promise<void> {
    this.#stop = true;
    await this.#done;
  }
}

/** Acknowledged numbers missing from the records file (GET ?all: line N is record N). */
async function lostRecords(acks: Ack[]): Promise<number[]> {
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await fetch(`${RECORDS}?all`, { signal: AbortSignal.timeout(3000) });
      if (!r.ok) throw new Error(`GET ?all: ${r.status}`);
      const have = new Set<number>();
      for (const line of (await r.text()).split('\n')) {
        const n = Number(line.split(' ')[0]);
        if (line && Number.isInteger(n)) have.add(n);
      }
      return acks.filter((a) => !have.has(a.n)).map((a) => a.n);
    } catch (err) {
      if (attempt >= 10) throw err;
      await sleep(500);
    }
  }
}

// ---------------------------------------------------------------- logs on the node

/** Times (ms) of pino lines with this event field in a JSON-lines log, optionally for one epoch. */
function logTimes(file: string, event: string, epoch?: number): number[] {
  if (!existsSync(file)) return [];
  const out: number[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.includes(`"event":"${event}"`)) continue;
    try {
      const j = JSON.parse(line) as { time: string; epoch?: number };
      if (epoch === undefined || j.epoch === epoch) out.push(Date.parse(j.time));
    } catch {}
  }
  return out;
}
const firstAfter = (ts: number[], t: number) => ts.filter((x) => x >= t).sort((a, b) => a - b)[0];

// ---------------------------------------------------------------- figures

const PHASES = ['detect', 'assign', 'pickup', 'promote', 'mount', 'start', 'healthy', 'http'] as const;
type Phase = (typeof PHASES)[number];
interface Trial {
  trial: number;
  from: string;
  to: string;
  epoch: number;
  managerKilled: boolean;
  /** Milliseconds from the cut to the end of each phase (NaN: not seen). */
  at: Record<Phase, number>;
  total: number;
  lost: number[];
  failedPosts: number;
  rejoinMs: number;
}

function quantile(xs: number[], p: number): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!;
}
const sec = (ms: number) => (Number.isFinite(ms) ? (ms / 1000).toFixed(2) : '  -  ');
/** Each phase's own length: from the end of the previous one seen (`aside`: phases the next does not follow). */
function phaseLengths<P extends string>(
  phases: readonly P[],
  at: Record<P, number>,
  aside: P[] = [],
): Record<P, number> {
  const out = {} as Record<P, number>;
  let prev = 0;
  for (const p of phases) {
    out[p] = Number.isFinite(at[p]) ? at[p] - prev : Number.NaN;
    if (Number.isFinite(at[p]) && !aside.includes(p)) prev = at[p];
  }
  return out;
}
/** A power cut's phases: healthy and http both from start (the first answer does not wait for the reported "healthy"). */
const segments = (t: Trial) => phaseLengths(PHASES, t.at, ['healthy']);

async function powerCut(trial: number, client: Client): Promise<Trial> {
  const before = await waitStatus('the demo healthy and every replica in sync', allInSync, 180_000);
  const v = before.vservers[0]!;
  const from = v.node!;
  // Some acknowledged writes on the victim first.
  const acksBefore = client.acks.length;
  while (client.acks.length < acksBefore + 5) await sleep(50);
  const spawned = Date.now();
  const kill = JSON.parse(await lab('kill', from, '--json')) as { cutAt?: number };
  const cut = kill.cutAt ?? spawned;
  const failuresAtCut = client.failures;
  const deadline = Date.now() + 90_000;
  let first = client.firstAckAfter(cut);
  while (!first) {
    if (Date.now() > deadline) throw new Error(`trial ${trial}: no successful POST 90 s after the cut`);
    await sleep(20);
    first = client.firstAckAfter(cut);
  }
  const failedPosts = client.failures - failuresAtCut;
  const alive = NODES.filter((n) => n !== from);
  // The reports reach etcd a little after the fact: wait for the node's "healthy" event.
  let evs: ClusterEvent[] = [];
  const evEnd = Date.now() + 30_000;
  for (;;) {
    evs = (await events(alive[0]!)).filter((e) => e.at >= cut);
    if (evs.some((e) => e.source === 'node' && e.text === 'demo: healthy') || Date.now() > evEnd) break;
    await sleep(1000);
  }
  const assign = evs.find(
    (e) => e.source === 'manager' && /^demo: assign to \S+ with epoch \d+/.test(e.text),
  );
  const m = assign ? /^demo: assign to (\S+) with epoch (\d+)/.exec(assign.text) : null;
  const to = m?.[1] ?? '?';
  const epoch = Number(m?.[2] ?? 0);
  const evAt = (pred: (e: ClusterEvent) => boolean) => evs.find(pred)?.at ?? Number.NaN;
  const nodeDir = join(LAB_DIR, 'nodes', to);
  const agentLog = join(nodeDir, 'agent.log');
  const rel = (t: number | undefined) => (t === undefined || !Number.isFinite(t) ? Number.NaN : t - cut);
  const at: Record<Phase, number> = {
    detect: rel(evAt((e) => e.source === 'manager' && e.text === `${from}: alive -> expired`)),
    assign: rel(assign?.at),
    pickup: rel(
      evAt(
        (e) => e.source === 'node' && e.node === to && e.text.startsWith(`demo: start with epoch ${epoch}`),
      ),
    ),
    promote: rel(firstAfter(logTimes(join(nodeDir, 'volumes/demo/run/daemon.log'), 'promoted', epoch), cut)),
    mount: rel(firstAfter(logTimes(agentLog, 'volume-primary', epoch), cut)),
    start: rel(firstAfter(logTimes(agentLog, 'vserver-started', epoch), cut)),
    healthy: rel(evAt((e) => e.source === 'node' && e.node === to && e.text === 'demo: healthy')),
    http: first.at - cut,
  };
  const lost = await lostRecords(client.acks);
  // The node boots again and must come back as a secondary in sync.
  const t0 = Date.now();
  await lab('start', from);
  await waitStatus(
    `${from} back as a secondary in sync`,
    (s) => allInSync(s) && s.vservers[0]!.node !== from,
    180_000,
    alive,
  );
  return {
    trial,
    from,
    to,
    epoch,
    managerKilled: before.manager === from,
    at,
    total: first.at - cut,
    lost,
    failedPosts,
    rejoinMs: Date.now() - t0,
  };
}

/**
 * A migration's hand-offs, each the end of a phase, from the operator's request (its event on the source
 * node): the manager accepts and removes the assignment; the source picks the stop up, stops the container
 * and demotes its volume (agent log `stopped`, its `ms` per step); the manager sees it stopped and assigns
 * the target; the target picks the start up, is promoted (volume daemon), mounts, starts the container
 * (`vserver-started`, its `ms`), reports healthy; `done` is when `cvserver migrate` saw it healthy.
 */
const MIG_PHASES = [
  'accept',
  'stop',
  'container',
  'demote',
  'seen',
  'assign',
  'pickup',
  'promote',
  'mount',
  'start',
  'healthy',
  'done',
] as const;
type MigPhase = (typeof MIG_PHASES)[number];

interface Migration {
  from: string;
  to: string;
  seconds: number;
  gapMs: number;
  lost: number[];
  /** Milliseconds from the request to the end of each phase (NaN: not seen). */
  at: Record<MigPhase, number>;
  /** The client's first answer from the target, from its `vserver-started` (ms; NaN: not seen). */
  httpAfterStart: number;
  /** The `ms` of the source's `stopped` and of the target's `vserver-started` log lines. */
  stopMs: Record<string, number>;
  startMs: Record<string, number>;
}

/** The `ms` field of the first log line with this event (and epoch) at or after `t`. */
function logMs(file: string, event: string, t: number, epoch?: number): Record<string, number> {
  if (!existsSync(file)) return {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.includes(`"event":"${event}"`)) continue;
    try {
      const j = JSON.parse(line) as { time: string; epoch?: number; ms?: Record<string, number> };
      if (Date.parse(j.time) >= t && (epoch === undefined || j.epoch === epoch)) return j.ms ?? {};
    } catch {}
  }
  return {};
}

async function migrate(client: Client): Promise<Migration> {
  const s = await waitStatus('the demo healthy and in sync', allInSync, 180_000);
  const from = s.vservers[0]!.node!;
  const to = NODES[(NODES.indexOf(from) + 1) % NODES.length]!;
  const t0 = Date.now();
  const r = await onNode<{ seconds: number; epoch: number }>(from, 'migrate', 'demo', to, '--json');
  // The client's first success after the move ends the gap.
  const moved = Date.now();
  while (!client.firstAckAfter(moved)) await sleep(20);
  await sleep(200);
  // The events reach the store a round after the fact: wait for the manager's "healthy on".
  let evs: ClusterEvent[] = [];
  const evEnd = Date.now() + 10_000;
  for (;;) {
    evs = (await events(from)).filter((e) => e.at >= t0);
    if (evs.some((e) => e.source === 'manager' && e.text === `demo: healthy on ${to}`) || Date.now() > evEnd)
      break;
    await sleep(300);
  }
  const evAt = (pred: (e: ClusterEvent) => boolean) => evs.find(pred)?.at ?? Number.NaN;
  const req = evAt((e) => e.source === 'operator' && e.text.startsWith(`demo: migrate to ${to} requested`));
  const rel = (t: number | undefined) => (t === undefined || !Number.isFinite(t) ? Number.NaN : t - req);
  const src = join(LAB_DIR, 'nodes', from, 'agent.log');
  const dst = join(LAB_DIR, 'nodes', to);
  const epoch = r.epoch;
  const at: Record<MigPhase, number> = {
    accept: rel(evAt((e) => e.source === 'manager' && e.text === `migrate demo ${to}: accepted`)),
    stop: rel(evAt((e) => e.source === 'node' && e.node === from && e.text.startsWith('demo: stop:'))),
    container: rel(firstAfter(logTimes(src, 'container-stopped'), t0)),
    demote: rel(firstAfter(logTimes(src, 'stopped'), t0)),
    seen: rel(evAt((e) => e.source === 'manager' && e.text.startsWith(`demo: stopped on ${from}`))),
    assign: rel(evAt((e) => e.source === 'manager' && e.text.startsWith(`demo: assign to ${to} with epoch`))),
    pickup: rel(
      evAt(
        (e) => e.source === 'node' && e.node === to && e.text.startsWith(`demo: start with epoch ${epoch}`),
      ),
    ),
    promote: rel(firstAfter(logTimes(join(dst, 'volumes/demo/run/daemon.log'), 'promoted', epoch), t0)),
    mount: rel(firstAfter(logTimes(join(dst, 'agent.log'), 'volume-primary', epoch), t0)),
    start: rel(firstAfter(logTimes(join(dst, 'agent.log'), 'vserver-started', epoch), t0)),
    healthy: rel(evAt((e) => e.source === 'node' && e.node === to && e.text === 'demo: healthy')),
    done: rel(req + r.seconds * 1000),
  };
  const started = req + at.start;
  return {
    from,
    to,
    seconds: r.seconds,
    gapMs: client.longestGap(t0, Date.now()),
    lost: await lostRecords(client.acks),
    at,
    httpAfterStart: (client.firstAckAfter(started)?.at ?? Number.NaN) - started,
    stopMs: logMs(src, 'stopped', t0),
    startMs: logMs(join(dst, 'agent.log'), 'vserver-started', t0, epoch),
  };
}

const migSegments = (m: Migration) => phaseLengths(MIG_PHASES, m.at);
const msLine = (ms: Record<string, number>) =>
  Object.entries(ms)
    .map(([k, v]) => `${k} ${v}`)
    .join(' ');

// ---------------------------------------------------------------- idle CPU and RSS

interface Proc {
  node: string;
  role: string;
  pid: number;
}
/** utime+stime in ticks, NaN once the process is gone (a short-lived helper of the agent). */
const cpuTicks = (pid: number): number => {
  if (!existsSync(`/proc/${pid}/stat`)) return Number.NaN;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
};
const rssMiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
const children = (pid: number): number[] => {
  const out: number[] = [];
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const c = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
    if (c) out.push(...c.split(' ').map(Number));
  }
  return out;
};
function roleOf(pid: number): string {
  const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  if (cmd.some((a) => a.endsWith('/etcd'))) return 'etcd';
  if (cmd.some((a) => a.endsWith('guard-main.ts'))) return 'guard';
  if (cmd.some((a) => a.endsWith('volume/daemon.ts'))) return 'volume daemon';
  if (cmd.includes('supervise')) return 'vserver supervisor';
  return cmd.slice(0, 3).join(' ').slice(-40);
}

interface Idle {
  node: string;
  role: string;
  pid: number;
  cpuPct: number;
  rssMiB: number;
}

/** The membership mesh's traffic per node over the idle window (heartbeats sent and received per second). */
interface MeshCost {
  node: string;
  links: number;
  sentPerS: number;
  receivedPerS: number;
}

const meshReport = (node: string) =>
  callAgent(
    join(LAB_DIR, 'nodes', node, 'run', 'agent.sock'),
    { op: 'links' },
    5000,
  ) as Promise<MeshReport | null>;
const received = (r: MeshReport | null) => (r?.links ?? []).reduce((n, l) => n + l.received, 0);

let meshCost: MeshCost[] = [];

async function idle(seconds: number): Promise<Idle[]> {
  const labStatus = JSON.parse(await lab('status', '--json')) as { nodes: { name: string; pid: number }[] };
  const procs: Proc[] = [];
  for (const n of labStatus.nodes) {
    procs.push({ node: n.name, role: 'agent', pid: n.pid });
    for (const c of children(n.pid)) procs.push({ node: n.name, role: roleOf(c), pid: c });
  }
  // Baseline: a plain node process doing nothing, as the agent's floor.
  const node = process.execPath;
  const plain = spawn(node, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await sleep(1000);
  procs.push({ node: '-', role: 'plain idle node (baseline)', pid: plain.pid! });
  try {
    const t0 = procs.map((p) => cpuTicks(p.pid));
    const m0 = await Promise.all(NODES.map((n) => meshReport(n).catch(() => null)));
    const w0 = performance.now();
    await sleep(seconds * 1000);
    const wall = (performance.now() - w0) / 1000;
    const m1 = await Promise.all(NODES.map((n) => meshReport(n).catch(() => null)));
    meshCost = NODES.map((node, i) => ({
      node,
      links: m1[i]?.links.length ?? 0,
      sentPerS: ((m1[i]?.sent ?? 0) - (m0[i]?.sent ?? 0)) / wall,
      receivedPerS: (received(m1[i] ?? null) - received(m0[i] ?? null)) / wall,
    }));
    return procs
      .map((p, i) => ({
        ...p,
        cpuPct: ((cpuTicks(p.pid) - t0[i]!) / CLK_TCK / wall) * 100,
        rssMiB: existsSync(`/proc/${p.pid}/status`) ? rssMiB(p.pid) : Number.NaN,
      }))
      .filter((p) => Number.isFinite(p.cpuPct) && Number.isFinite(p.rssMiB));
  } finally {
    plain.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------- main

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

let downDone: Promise<void> | undefined;
function labDown(): Promise<void> {
  downDone ??= (async () => {
    note('bench: lab down');
    try {
      await lab('down');
    } catch (err) {
      note(`bench: lab down failed: ${String(err)}`);
    }
  })();
  return downDone;
}
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.on(sig, () => {
    void labDown().then(() => process.exit(130));
  });

async function main(): Promise<void> {
  await labDown();
  downDone = undefined;
  // On a loaded machine the first placement can end "failed" (fencing during start): one more lab up.
  let upMs = 0;
  for (let attempt = 1; ; attempt++) {
    note(`bench: lab up --name ${NAME} --subnet ${SUBNET}`);
    const upAt = Date.now();
    try {
      await lab('up', '--subnet', SUBNET, '--links', '2', '--json');
      upMs = Date.now() - upAt;
      await waitStatus('every replica in sync', allInSync, 120_000);
      break;
    } catch (err) {
      if (attempt >= 2) throw err;
      note(`bench: the demo did not settle after lab up (${String(err).slice(0, 300)}); again`);
      await labDown();
      downDone = undefined;
    }
  }
  // Idle means the steady state: the agents' start-up work over (JIT, the resource worker used at the
  // demo's start and ended after 15 s unused, the first reports).
  note(`bench: settling ${SETTLE_S} s before the idle window`);
  await sleep(SETTLE_S * 1000);
  note(`bench: idle CPU over ${IDLE_S} s`);
  const idleFigures = await idle(IDLE_S);
  note(`bench: load average ${loadavg()}`);

  const client = new Client();
  client.start();
  const trials: Trial[] = [];
  const migrations: Migration[] = [];
  let error = '';
  try {
    for (let i = 1; i <= TRIALS; i++) {
      note(`bench: power cut ${i}/${TRIALS}`);
      const t = await powerCut(i, client);
      trials.push(t);
      const seg = segments(t);
      note(
        `  ${t.from}→${t.to} e${t.epoch}${t.managerKilled ? ' (manager)' : ''}: ${PHASES.map((p) => `${p} ${sec(seg[p])}`).join(', ')}; total ${sec(t.total)} s; lost ${t.lost.length}`,
      );
    }
    for (let i = 1; i <= MIGRATIONS; i++) {
      note(`bench: migrate ${i}/${MIGRATIONS}`);
      const m = await migrate(client);
      migrations.push(m);
      note(`  ${m.from}→${m.to}: ${m.seconds.toFixed(2)} s, gap ${sec(m.gapMs)} s, lost ${m.lost.length}`);
      const seg = migSegments(m);
      note(`    ${MIG_PHASES.map((p) => `${p} ${sec(seg[p])}`).join(', ')}`);
      note(
        `    stop ms: ${msLine(m.stopMs)}; start ms: ${msLine(m.startMs)}; client's first answer ${sec(m.httpAfterStart)} s after the start`,
      );
    }
  } catch (err) {
    // The figures so far are still printed, with what stopped the run.
    error = err instanceof Error ? err.message : String(err);
    note(`bench: stopped early: ${error}`);
    process.exitCode = 1;
  } finally {
    await client.stop();
  }
  report({ upMs, idleFigures, trials, migrations, client, error });
}

function report(r: {
  upMs: number;
  idleFigures: Idle[];
  trials: Trial[];
  migrations: Migration[];
  client: Client;
  error: string;
}): void {
  const { trials, migrations, idleFigures } = r;
  const segs = trials.map(segments);
  const summary = Object.fromEntries(
    PHASES.map((p) => [
      p,
      {
        segmentP50: quantile(
          segs.map((s) => s[p]),
          0.5,
        ),
        segmentP99: quantile(
          segs.map((s) => s[p]),
          0.99,
        ),
        fromCutP50: quantile(
          trials.map((t) => t.at[p]),
          0.5,
        ),
        fromCutP99: quantile(
          trials.map((t) => t.at[p]),
          0.99,
        ),
      },
    ]),
  );
  const totalP50 = quantile(
    trials.map((t) => t.total),
    0.5,
  );
  const totalP99 = quantile(
    trials.map((t) => t.total),
    0.99,
  );
  const migP50 = quantile(
    migrations.map((m) => m.seconds * 1000),
    0.5,
  );
  const migP99 = quantile(
    migrations.map((m) => m.seconds * 1000),
    0.99,
  );
  const gapP50 = quantile(
    migrations.map((m) => m.gapMs),
    0.5,
  );
  const migSegs = migrations.map(migSegments);
  const migSummary = Object.fromEntries(
    MIG_PHASES.map((p) => [
      p,
      quantile(
        migSegs.map((x) => x[p]),
        0.5,
      ),
    ]),
  );
  const lostUnplanned = trials.reduce((n, t) => n + t.lost.length, 0);
  const lostPlanned = migrations.reduce((n, m) => n + m.lost.length, 0);
  if (JSON_OUT) {
    console.log(
      JSON.stringify(
        {
          leaseTtlMs: LEASE_TTL_MS,
          labUpMs: r.upMs,
          trials,
          summary,
          total: { p50: totalP50, p99: totalP99 },
          lostUnplanned,
          migrations,
          migrate: { p50: migP50, p99: migP99, gapP50, phasesP50: migSummary },
          lostPlanned,
          acknowledged: r.client.acks.length,
          idle: idleFigures,
          mesh: meshCost,
          loadavg: loadavg(),
          error: r.error || undefined,
        },
        null,
        2,
      ),
    );
    return;
  }
  say(
    `failover bench: lab "${NAME}" (3 full nodes), lease TTL ${LEASE_TTL_MS / 1000} s; lab up ${sec(r.upMs)} s; load average at the end ${loadavg()} (2 cores)`,
  );
  if (r.error) say(`STOPPED EARLY: ${r.error}`);
  say('');
  say(
    `power cuts of the node running the demo (${trials.length}); seconds, each phase from the end of the previous`,
  );
  say(
    `  #  from→to  epoch mgr  ${PHASES.map((p) => p.padStart(7)).join(' ')}   total  lost  failed POSTs  rejoin`,
  );
  trials.forEach((t, i) => {
    const s = segs[i]!;
    say(
      `  ${String(t.trial).padStart(2)} ${t.from}→${t.to}   ${String(t.epoch).padStart(5)} ${t.managerKilled ? 'yes' : ' no'}  ${PHASES.map((p) => sec(s[p]).padStart(7)).join(' ')}  ${sec(t.total).padStart(6)}  ${String(t.lost.length).padStart(4)}  ${String(t.failedPosts).padStart(12)}  ${sec(t.rejoinMs).padStart(6)}`,
    );
  });
  say(
    `  p50                     ${PHASES.map((p) => sec(summary[p]!.segmentP50).padStart(7)).join(' ')}  ${sec(totalP50).padStart(6)}`,
  );
  say(
    `  p99                     ${PHASES.map((p) => sec(summary[p]!.segmentP99).padStart(7)).join(' ')}  ${sec(totalP99).padStart(6)}`,
  );
  say(`  from the cut, p50       ${PHASES.map((p) => sec(summary[p]!.fromCutP50).padStart(7)).join(' ')}`);
  say('');
  say(
    `  cut → first successful POST: p50 ${sec(totalP50)} s (target 5 s: ${(totalP50 / 5000).toFixed(2)}×), p99 ${sec(totalP99)} s (target 8 s: ${(totalP99 / 8000).toFixed(2)}×)`,
  );
  say(
    `  against the lease TTL (${LEASE_TTL_MS / 1000} s, the floor of detection): detect p50 ${(summary.detect!.segmentP50 / LEASE_TTL_MS).toFixed(2)}×, total p50 ${(totalP50 / LEASE_TTL_MS).toFixed(2)}×`,
  );
  say(
    `  acknowledged records lost: ${lostUnplanned} (of ${r.client.acks.length} acknowledged in the whole run)`,
  );
  say('');
  say(`planned migrate with the client writing (${migrations.length})`);
  for (const m of migrations)
    say(
      `  ${m.from}→${m.to}: ${m.seconds.toFixed(2)} s (client's longest gap ${sec(m.gapMs)} s), lost ${m.lost.length}`,
    );
  say(
    `  p50 ${sec(migP50)} s (target 2 s: ${(migP50 / 2000).toFixed(2)}×), p99 ${sec(migP99)} s; client gap p50 ${sec(gapP50)} s; lost ${lostPlanned}`,
  );
  if (migrations.length) {
    say('  phases (seconds, each from the end of the previous; from the request on the source node):');
    say(`     ${MIG_PHASES.map((p) => p.padStart(9)).join(' ')}`);
    for (const m of migrations) {
      const seg = migSegments(m);
      say(`     ${MIG_PHASES.map((p) => sec(seg[p]).padStart(9)).join(' ')}`);
    }
    say(`  p50 ${MIG_PHASES.map((p) => sec(migSummary[p]!).padStart(9)).join(' ')}`);
  }
  say('');
  say(
    `idle, ${IDLE_S} s with nothing happening, ${SETTLE_S} s after every replica was in sync (targets for the agent: < 2 % of one core, < 120 MB)`,
  );
  say(`  node  process                       pid     CPU %   RSS MiB`);
  for (const p of idleFigures)
    say(
      `  ${p.node.padEnd(4)}  ${p.role.padEnd(28)} ${String(p.pid).padStart(7)}  ${p.cpuPct.toFixed(2).padStart(6)}  ${p.rssMiB.toFixed(1).padStart(8)}`,
    );
  const agents = idleFigures.filter((p) => p.role === 'agent');
  const etcds = idleFigures.filter((p) => p.role === 'etcd');
  const plain = idleFigures.find((p) => p.node === '-');
  const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const aCpu = avg(agents.map((p) => p.cpuPct));
  const eCpu = avg(etcds.map((p) => p.cpuPct));
  const aRss = avg(agents.map((p) => p.rssMiB));
  const aMB = (aRss * 1048576) / 1e6;
  say(
    `  agent mean: ${aCpu.toFixed(2)} % CPU with the mesh on (${(aCpu / 2).toFixed(2)}× the 2 % target; ${(aCpu / Math.max(eCpu, 0.01)).toFixed(2)}× its etcd member's ${eCpu.toFixed(2)} %), ${aRss.toFixed(1)} MiB = ${aMB.toFixed(1)} MB RSS (${(aMB / 120).toFixed(2)}× the 120 MB target; ${plain ? `${(aRss / plain.rssMiB).toFixed(1)}× a plain idle node's ${plain.rssMiB.toFixed(1)} MiB` : ''})`,
  );
  say('');
  say('membership mesh (heartbeats over the idle window)');
  for (const m of meshCost)
    say(
      `  ${m.node}: ${m.links} links to peers, ${m.sentPerS.toFixed(1)} packets/s sent, ${m.receivedPerS.toFixed(1)} packets/s received`,
    );
}

try {
  await main();
} catch (err) {
  note(`bench: ${err instanceof Error ? err.stack : String(err)}`);
  process.exitCode = 1;
} finally {
  if (KEEP) note(`bench: lab "${NAME}" kept (cvserver lab down --name ${NAME})`);
  else await labDown();
}
