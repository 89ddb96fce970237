/**
 * A harness for end-to-end tests in a real `cvserver lab`: one lab per test (a name and subnet of its
 * own), always taken down after the test, the cluster's status and events as any live node reports
 * them, polling with a deadline, and a background client that keeps POSTing records to the demo and
 * remembers every number it got acknowledged.
 *
 * Everything runs asynchronously (child processes, http), so the writer keeps writing while a test
 * waits on a command.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { type AgentRequest, callAgent } from '../../src/agent/api.ts';
import type { EventRecord } from '../../src/agent/records.ts';
import type { ClusterStatus } from '../../src/agent/status.ts';
import { ROOT } from './cli.ts';

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs a command without blocking the event loop; never throws on a non-zero exit. */
export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ status: code, stdout: stdout ?? '', stderr: stderr ?? '' });
      },
    );
  });
}

const CVSERVER = join(ROOT, 'bin', 'cvserver');
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface HttpResult {
  status: number;
  body: string;
}

/** One http request with its own connection (no keep-alive: the demo's address moves between nodes). */
export function http(method: string, url: string, body = '', timeoutMs = 1000): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, timeout: timeoutMs }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        data += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
      res.on('error', reject);
    });
    // The socket timeout only covers idleness; this bounds the whole request.
    const timer = setTimeout(
      () => req.destroy(new Error(`${method} ${url}: no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    req.on('close', () => clearTimeout(timer));
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.on('error', reject);
    if (body) req.setHeader('content-length', Buffer.byteLength(body));
    req.end(body);
  });
}

/**
 * Polls `cond` every 500 ms until it returns something truthy (returned), or fails after `ms` naming
 * `what` and the last value or error seen.
 */
export async function until<T>(
  what: string,
  cond: () => T | Promise<T>,
  ms: number,
): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
      last = v;
    } catch (err) {
      last = err instanceof Error ? err.message : err;
    }
    if (Date.now() > end)
      throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await sleep(500);
  }
}

export interface UpOptions {
  /** One letter per test, unique across the lab test files: picks the name and subnet (10.(90 + i).0). */
  letter: string;
  nodes?: number;
  witness?: boolean;
  /** The cluster's lease TTL (s); the lab's default otherwise. */
  leaseTtl?: number;
}

export interface DemoPlace {
  node: string;
  epoch: number;
  status: string;
}

/** A lab built for one test. `up` registers its `down` with the test context. */
export class TestLab {
  readonly name: string;
  readonly subnet: string;
  readonly dir: string;
  readonly nodes: string[];
  /** Nodes the test took away (killed or cut): not asked for status or events. */
  readonly away = new Set<string>();

  private constructor(name: string, subnet: string, nodes: string[]) {
    this.name = name;
    this.subnet = subnet;
    this.dir = `/var/lib/cvserver-lab/${name}`;
    this.nodes = nodes;
  }

  get demoUrl(): string {
    return `http://${this.subnet}.100/cgi-bin/records`;
  }

  nodeAddress(node: string): string {
    return `${this.subnet}.${11 + this.nodes.indexOf(node)}`;
  }

  runDir(node: string): string {
    return join(this.dir, 'nodes', node, 'run');
  }

  static async up(t: TestContext, o: UpOptions): Promise<TestLab> {
    const i = 'abcdefghijklmnop'.indexOf(o.letter);
    if (i < 0) throw new Error(`letter ${o.letter}: one of a..p`);
    const name = `e${process.pid % 1000}${o.letter}`;
    const subnet = `10.${90 + i}.0`;
    const full = o.nodes ?? (o.witness ? 2 : 3);
    const nodes = [...Array.from({ length: full }, (_, k) => `n${k + 1}`), ...(o.witness ? ['w'] : [])];
    const lab = new TestLab(name, subnet, nodes);
    t.after(() => lab.down());
    const args = ['lab', 'up', '--name', name, '--subnet', subnet, '--nodes', String(full), '--json'];
    if (o.witness) args.push('--witness');
    if (o.leaseTtl) args.push('--lease-ttl', String(o.leaseTtl));
    const r = await run(CVSERVER, args, 300_000);
    if (r.status !== 0) throw new Error(`lab up ${name}: exit ${r.status}: ${r.stderr}`);
    return lab;
  }

  async down(): Promise<void> {
    // The cluster's log survives the lab, for a failed test's post-mortem.
    try {
      writeFileSync(`/tmp/cvserver-${this.name}-events.txt`, `${showEvents(await this.events())}\n`);
    } catch {}
    // And each node's agent log (the lab's directory goes with it).
    for (const n of this.nodes)
      try {
        copyFileSync(join(this.dir, 'nodes', n, 'agent.log'), `/tmp/cvserver-${this.name}-${n}-agent.log`);
      } catch {}
    const r = await run(CVSERVER, ['lab', 'down', '--name', this.name], 120_000);
    if (r.status !== 0) throw new Error(`lab down ${this.name}: ${r.stderr}`);
  }

  /** `cvserver lab ARGS --name NAME`, asserting success. */
  async lab(...args: string[]): Promise<string> {
    const r = await run(CVSERVER, ['lab', ...args, '--name', this.name], 120_000);
    if (r.status !== 0) throw new Error(`lab ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
    return r.stdout;
  }

  async kill(node: string): Promise<void> {
    this.away.add(node);
    await this.lab('kill', node);
  }

  async cut(node: string): Promise<void> {
    this.away.add(node);
    await this.lab('cut', node);
  }

  async start(node: string): Promise<void> {
    await this.lab('start', node);
    this.away.delete(node);
  }

  /** The node's agent only, started again (as a service manager would after it died): nothing else touched. */
  async restartAgent(node: string): Promise<void> {
    await this.lab('start', node, '--agent-only');
  }

  async heal(): Promise<void> {
    await this.lab('heal');
    this.away.clear();
  }

  /** `cvserver ARGS` inside a node (its namespace and state dir). */
  exec(node: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return run(CVSERVER, ['lab', 'exec', node, '--name', this.name, '--', 'cvserver', ...args], timeoutMs);
  }

  /** The nodes the test has not taken away, for questions to any agent. */
  present(): string[] {
    return this.nodes.filter((n) => !this.away.has(n));
  }

  /**
   * Asks a node's agent over its socket (a file under the node's state dir, so reachable from the host
   * without a process per question), the first present node that answers.
   */
  private async ask<T>(req: AgentRequest, node?: string): Promise<T> {
    const errors: string[] = [];
    for (const n of node ? [node] : this.present()) {
      try {
        return (await callAgent(join(this.dir, 'nodes', n, 'run', 'agent.sock'), req, 5000)) as T;
      } catch (err) {
        errors.push(`${n}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    throw new Error(`${req.op}: ${errors.join('; ')}`);
  }

  status(node?: string): Promise<ClusterStatus> {
    return this.ask<ClusterStatus>({ op: 'status' }, node);
  }

  /** The node whose etcd member leads, as a live node sees it (undefined while there is none). */
  async etcdLeader(node?: string): Promise<string | undefined> {
    const s = await this.status(node);
    const url = s.etcd.find((m) => m.leader)?.endpoint;
    return s.nodes.find((n) => url?.includes(`//${n.addresses[0]}:`))?.name;
  }

  async events(node?: string): Promise<EventRecord[]> {
    return (await this.ask<{ events: EventRecord[] }>({ op: 'events', limit: 500 }, node)).events;
  }

  /** Where the demo is assigned and how it is, as a live node sees it. */
  async whereIsDemo(node?: string): Promise<DemoPlace> {
    const s = await this.status(node);
    const v = s.vservers.find((x) => x.name === 'demo');
    if (!v) throw new Error('no demo in status');
    return { node: v.node ?? '', epoch: v.epoch, status: v.status };
  }

  /** Until the demo is healthy somewhere (optionally: not on `notOn`) and answers at its address. */
  async demoHealthy(ms: number, notOn?: string): Promise<DemoPlace> {
    return until(
      `the demo healthy${notOn ? ` on a node other than ${notOn}` : ''}`,
      async () => {
        const d = await this.whereIsDemo();
        if (d.status !== 'healthy' || !d.node || d.node === notOn) return undefined;
        const r = await http('GET', this.demoUrl);
        return r.status === 200 ? d : undefined;
      },
      ms,
    );
  }

  /** Until `node`'s replica of the demo's volume is UpToDate (and has `role`, when given), as `asked` sees it. */
  async demoReplicaInSync(node: string, ms: number, role?: string, asked?: string): Promise<ClusterStatus> {
    return until(
      `${node}'s replica of the demo's volume ${role ? `${role} and ` : ''}UpToDate`,
      async () => {
        const s = await this.status(asked);
        const r = s.vservers.find((v) => v.name === 'demo')?.replicas.find((x) => x.node === node);
        const ok = r?.upToDate && r.diskState === 'UpToDate' && (role === undefined || r.role === role);
        // Else the replica as it is now, for the time-out's message.
        if (!ok) throw new Error(JSON.stringify(r ?? 'no such replica'));
        return s;
      },
      ms,
    );
  }

  /** Every record (GET ?all) as number -> body. */
  async records(): Promise<Map<number, string>> {
    const r = await until(
      'GET ?all',
      async () => {
        const x = await http('GET', `${this.demoUrl}?all`, '', 3000);
        return x.status === 200 ? x : undefined;
      },
      15_000,
    );
    const out = new Map<number, string>();
    const lines = r.body.split('\n').filter(Boolean);
    lines.forEach((line, i) => {
      const [n, , ...body] = line.split(' ');
      if (Number(n) !== i + 1) throw new Error(`line ${i + 1} of the records is "${line}"`);
      out.set(i + 1, body.join(' '));
    });
    return out;
  }
}

export interface Ack {
  n: number;
  body: string;
  at: number;
}

/**
 * A client that POSTs a record every ~100 ms (1 s timeout per request) and keeps every acknowledged
 * number with its body and time. `lost()` compares them with what the demo lists afterwards.
 */
export class Writer {
  readonly acks: Ack[] = [];
  failures = 0;
  private seq = 0;
  private running = false;
  private loop: Promise<void> | undefined;

  private readonly url: string;
  private readonly tag: string;

  constructor(url: string, tag = 'w') {
    this.url = url;
    this.tag = tag;
  }

  start(): this {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const began = Date.now();
        const body = `${this.tag}-${++this.seq}`;
        try {
          const r = await http('POST', this.url, body, 1000);
          const n = Number(r.body.trim());
          if (r.status === 200 && Number.isInteger(n) && n > 0) this.acks.push({ n, body, at: Date.now() });
          else this.failures++;
        } catch {
          this.failures++;
        }
        await sleep(Math.max(0, 100 - (Date.now() - began)));
      }
    })();
    return this;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** The longest time (ms) between two consecutive acknowledgements: how long the demo was away. */
  longestGap(): number {
    let gap = 0;
    for (let i = 1; i < this.acks.length; i++) gap = Math.max(gap, this.acks[i]!.at - this.acks[i - 1]!.at);
    return gap;
  }

  /** Acknowledged after `t` (ms). */
  ackedAfter(t: number): Ack[] {
    return this.acks.filter((a) => a.at > t);
  }

  /** Acknowledged records missing from `records` or with another body there (should be none). */
  lost(records: Map<number, string>, before = Number.POSITIVE_INFINITY): Ack[] {
    return this.acks.filter((a) => a.at <= before && records.get(a.n) !== a.body);
  }
}

/** Events whose text matches, after `since` (ms), optionally from one node. */
export function eventsMatching(events: EventRecord[], re: RegExp, since = 0, node?: string): EventRecord[] {
  return events.filter((e) => e.at >= since && re.test(e.text) && (node === undefined || e.node === node));
}

/** A readable dump of events for assertion messages. */
export function showEvents(events: EventRecord[], since = 0): string {
  return events
    .filter((e) => e.at >= since)
    .map((e) => `${new Date(e.at).toISOString().slice(11, 23)} ${e.node} ${e.source}: ${e.text}`)
    .join('\n');
}
