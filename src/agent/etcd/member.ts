import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { errorMessage } from '../../lib/errors.ts';
import { createLogger, type Logger } from '../../lib/log.ts';
import { EtcdClient } from './client.ts';

/**
 * One local etcd member, run and supervised by the agent: TLS with client certificates on both the
 * client and the peer port, restarted with backoff when it exits. It is a plain (non-detached) child
 * started through `setpriv --pdeathsig KILL`, so it dies with the agent even when the agent is killed
 * (as a power cut would), and an agent that comes back starts its member again on the same data dir.
 */

export interface EtcdMemberOptions {
  name: string;
  dataDir: string;
  /** `https://ADDR:PEERPORT` — listened on and advertised to the other members. */
  peerUrl: string;
  /** `https://ADDR:CLIENTPORT` (advertised) and usually `https://127.0.0.1:CLIENTPORT` (local clients). */
  clientUrls: string[];
  /** Every voting member, this one included. */
  initialCluster: { name: string; peerUrl: string }[];
  /** A member added to a running cluster (etcd MemberAdd): `--initial-cluster-state existing` from the start. */
  join?: boolean;
  /** Paths of the PEM files: the cluster CA, this node's certificate and key (server and client usage). */
  tls: { ca: string; cert: string; key: string };
  /** etcd's stdout and stderr are appended here. */
  logFile: string;
  /** Cluster token: members of different clusters never join each other. Default 'cvserver'. */
  clusterToken?: string;
  binary?: string;
  heartbeatMs?: number;
  electionMs?: number;
  /** Restart backoff: first delay, doubled after each quick exit up to the max. */
  restartDelayMs?: { min: number; max: number };
  logger?: Logger;
}

/** A run longer than this resets the restart backoff. */
const STABLE_RUN_MS = 10_000;
const STOP_GRACE_MS = 5_000;

/** The etcd command line for these options (pure; `existing` when the data dir already holds a member). */
export function etcdArgs(o: EtcdMemberOptions, existing: boolean): string[] {
  const advertised = o.clientUrls.filter((u) => !isLoopbackUrl(u));
  return [
    '--name',
    o.name,
    '--data-dir',
    o.dataDir,
    '--listen-peer-urls',
    o.peerUrl,
    '--initial-advertise-peer-urls',
    o.peerUrl,
    '--listen-client-urls',
    [...new Set(o.clientUrls)].join(','),
    '--advertise-client-urls',
    (advertised.length > 0 ? advertised : o.clientUrls).join(','),
    '--initial-cluster',
    o.initialCluster.map((m) => `${m.name}=${m.peerUrl}`).join(','),
    '--initial-cluster-state',
    existing ? 'existing' : 'new',
    '--initial-cluster-token',
    o.clusterToken ?? 'cvserver',
    '--client-cert-auth',
    '--trusted-ca-file',
    o.tls.ca,
    '--cert-file',
    o.tls.cert,
    '--key-file',
    o.tls.key,
    '--peer-client-cert-auth',
    '--peer-trusted-ca-file',
    o.tls.ca,
    '--peer-cert-file',
    o.tls.cert,
    '--peer-key-file',
    o.tls.key,
    '--heartbeat-interval',
    String(o.heartbeatMs ?? 100),
    '--election-timeout',
    String(o.electionMs ?? 1000),
    // A member that was cut off (or asleep) and comes back must not depose a working leader: without
    // pre-vote it returns with a higher term and forces an election, and every node's lease renewals
    // stall for that long (3.4 leaves it off by default; 3.5 turns it on).
    '--pre-vote',
    // The store holds small, often rewritten keys (leases, reports): keep an hour of history at most.
    '--auto-compaction-mode',
    'periodic',
    '--auto-compaction-retention',
    '1h',
    '--logger',
    'zap',
    '--log-outputs',
    'stderr',
  ];
}

function isLoopbackUrl(url: string): boolean {
  try {
    const h = new URL(url).hostname;
    return h === 'localhost' || h.startsWith('127.') || h === '[::1]';
  } catch {
    return false;
  }
}

export class EtcdMember {
  readonly options: EtcdMemberOptions;
  private readonly log: Logger;
  private child: ChildProcess | null = null;
  private wanted = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private delayMs: number;
  private exited: Promise<void> = Promise.resolve();
  /** How many times the member was started (1 + restarts). */
  starts = 0;

  constructor(options: EtcdMemberOptions) {
    this.options = options;
    this.log = options.logger ?? createLogger('etcd-member', { member: options.name });
    this.delayMs = options.restartDelayMs?.min ?? 500;
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Starts the member and keeps it running until stop(). */
  start(): void {
    if (this.wanted) return;
    this.wanted = true;
    this.spawnOnce();
  }

  /** SIGTERM, then SIGKILL after a grace period; only our own child. No restart afterwards. */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    this.wanted = false;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const child = this.child;
    if (!child) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(killer);
  }

  /**
   * Waits until this member answers on its first client URL with a known leader and serves a linearizable
   * read (which needs a quorum). Throws with the last error when `ms` passes.
   */
  async waitHealthy(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    const endpoint = this.options.clientUrls[0]!;
    const client = new EtcdClient({
      endpoints: [endpoint],
      ca: readFileSync(this.options.tls.ca, 'utf8'),
      cert: readFileSync(this.options.tls.cert, 'utf8'),
      key: readFileSync(this.options.tls.key, 'utf8'),
      timeoutMs: 1000,
    });
    let last = 'not started';
    try {
      while (Date.now() < deadline) {
        try {
          const timeoutMs = Math.max(100, Math.min(1000, deadline - Date.now()));
          const st = await client.status(endpoint, { timeoutMs });
          if (st.leader === '0') last = 'no leader yet';
          else {
            await client.range('health', { timeoutMs });
            return;
          }
        } catch (err) {
          last = errorMessage(err);
        }
        if (!this.wanted)
          throw new Error(`etcd member ${this.options.name}: stopped while waiting to be healthy`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      client.close();
    }
    throw new Error(`etcd member ${this.options.name} not healthy within ${ms} ms: ${last}`);
  }

  private spawnOnce(): void {
    const o = this.options;
    mkdirSync(dirname(o.dataDir), { recursive: true });
    mkdirSync(dirname(o.logFile), { recursive: true });
    const existing = existsSync(join(o.dataDir, 'member'));
    const out = openSync(o.logFile, 'a', 0o640);
    let child: ChildProcess;
    try {
      // setpriv execs etcd (same pid) with PR_SET_PDEATHSIG: the kernel kills it when the agent dies.
      child = spawn(
        'setpriv',
        ['--pdeathsig', 'KILL', '--', o.binary ?? '/usr/bin/etcd', ...etcdArgs(o, existing || !!o.join)],
        {
          stdio: ['ignore', out, out],
        },
      );
    } finally {
      closeSync(out);
    }
    this.child = child;
    this.starts++;
    const startedAt = Date.now();
    this.log.info(
      { event: 'etcd-start', pid: child.pid, existing, reason: 'member wanted' },
      'etcd member started',
    );
    this.exited = new Promise((resolve) => {
      child.once('error', (err) => {
        this.log.error(
          { event: 'etcd-spawn-failed', error: errorMessage(err) },
          'etcd member could not start',
        );
      });
      child.once('close', (code, signal) => {
        this.child = null;
        resolve();
        const ranMs = Date.now() - startedAt;
        if (!this.wanted) {
          this.log.info(
            { event: 'etcd-stopped', code, signal, reason: 'stop requested' },
            'etcd member stopped',
          );
          return;
        }
        const max = o.restartDelayMs?.max ?? 10_000;
        if (ranMs > STABLE_RUN_MS) this.delayMs = o.restartDelayMs?.min ?? 500;
        const delay = this.delayMs;
        this.delayMs = Math.min(max, this.delayMs * 2);
        this.log.warn(
          { event: 'etcd-exited', code, signal, ranMs, restartInMs: delay, reason: `see ${o.logFile}` },
          'etcd member exited; restarting',
        );
        this.restartTimer = setTimeout(() => {
          this.restartTimer = null;
          if (this.wanted) this.spawnOnce();
        }, delay);
      });
    });
  }
}
