/**
 * The cluster steps of `lab up`, in order around the nodes' start: the credentials (`cvserver init`),
 * storing cluster.yaml in the cluster (`cvserver apply`, from the first node once its agent answers),
 * and waiting until the demo answers at its address.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { initCredentials } from '../agent/credentials.ts';
import { loadClusterConfig } from '../cluster/config.ts';
import { UserError } from '../lib/errors.ts';
import { readJsonOr, writeFileAtomic } from '../lib/json-file.ts';
import { clusterFile, type Lab } from './layout.ts';
import { netnsPath } from './network.ts';

export interface LabHooks {
  /** After the network and cluster.yaml, before the nodes start: the cluster's credentials (`cvserver init`). */
  init(lab: Lab): Promise<void>;
  /** After the nodes started: store cluster.yaml in the cluster (`cvserver apply`, from a node). */
  apply(lab: Lab): Promise<void>;
  /** After apply: an admin token for the dashboard, kept in `<dir>/dashboard.json` (issue 13). */
  dashboard(lab: Lab): Promise<void>;
  /** Last: wait until the demo answers at its URL. */
  waitForDemo(lab: Lab): Promise<void>;
}

const ROOT = join(import.meta.dirname, '..', '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (m: string) => process.stderr.write(`lab: ${m}\n`);

/** The shared secret, the CA and every node's certificate, once (a lab that exists keeps its own). */
export async function initClusterHook(lab: Lab): Promise<void> {
  const spec = loadClusterConfig(clusterFile(lab));
  if (existsSync(spec.secret_file)) return;
  const { created } = initCredentials({
    secretFile: spec.secret_file,
    tlsDir: spec.tls_dir,
    nodes: spec.nodes.map((n) => ({ name: n.name, addresses: n.addresses })),
  });
  say(`credentials made (${created.length} files under ${lab.dir})`);
}

/** Runs `cvserver ARGS` inside a node (its namespace and state dir), quietly; returns status and output. */
export function runOnNode(lab: Lab, node: string, args: string[], timeoutMs = 60_000) {
  const n = lab.nodes.find((x) => x.name === node);
  if (!n) throw new UserError(`no node ${node} in lab ${lab.name}`);
  const r = spawnSync(
    'nsenter',
    [`--net=${netnsPath(n.namespace)}`, join(ROOT, 'bin', 'cvserver'), ...args],
    {
      env: { ...process.env, CVSERVER_STATE_DIR: n.stateDir },
      encoding: 'utf8',
      timeout: timeoutMs,
    },
  );
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** `cvserver apply` from the first node, retried while its agent starts and etcd elects a leader. */
export async function applyClusterHook(lab: Lab): Promise<void> {
  const first = lab.nodes[0]!.name;
  const until = Date.now() + 120_000;
  let last = '';
  for (;;) {
    const r = runOnNode(lab, first, ['apply', clusterFile(lab)]);
    if (r.status === 0) {
      say(`cluster.yaml applied from ${first}`);
      return;
    }
    last = r.stderr.trim();
    // A configuration error will not go away by waiting.
    if (/cluster\.yaml:\d+/.test(last)) throw new UserError(last);
    if (Date.now() > until) throw new UserError(`cvserver apply did not succeed within 120 s: ${last}`);
    await sleep(1000);
  }
}

/** Polls the demo's URL from the host until it answers (the first start makes its filesystem). */
export async function waitForDemoHook(lab: Lab): Promise<void> {
  const url = `${lab.demo.url.replace(/\/$/, '')}/cgi-bin/records`;
  const began = Date.now();
  let shown = 0;
  for (;;) {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (r.ok) {
        say(`demo answers at ${url} after ${((Date.now() - began) / 1000).toFixed(1)} s`);
        return;
      }
    } catch {}
    const s = Math.floor((Date.now() - began) / 10_000);
    if (s > shown) {
      shown = s;
      say(`waiting for the demo at ${url} (${s * 10} s)`);
    }
    if (Date.now() - began > 240_000)
      throw new UserError(
        `the demo did not answer at ${url} within 240 s; see cvserver lab exec ${lab.nodes[0]!.name} -- cvserver status, and the agents' logs under ${lab.dir}/nodes/*/agent.log`,
      );
    await sleep(500);
  }
}

/** The dashboard's URL and admin token (`lab up` prints them, `lab status --json` shows them). */
export interface LabDashboard {
  url: string;
  token: string;
  /** The CA the dashboard's certificate is signed by (the lab's own). */
  ca: string;
}

export function dashboardFile(lab: Lab): string {
  return join(lab.dir, 'dashboard.json');
}

export function readDashboard(lab: Lab): LabDashboard | null {
  return readJsonOr<LabDashboard>(dashboardFile(lab)) ?? null;
}

/** An admin token `lab-admin`, made once from the first node (a lab run again keeps its token). */
export async function dashboardHook(lab: Lab): Promise<void> {
  if (readDashboard(lab)) return;
  const spec = loadClusterConfig(clusterFile(lab));
  if (!spec.http.enabled) return;
  const first = lab.nodes[0]!;
  const until = Date.now() + 60_000;
  for (;;) {
    const r = runOnNode(lab, first.name, ['token', 'create', 'lab-admin', '--scope', 'admin', '--json']);
    if (r.status === 0) {
      const { token } = JSON.parse(r.stdout) as { token: string };
      const scheme = spec.http.tls ? 'https' : 'http';
      const host = spec.http.tls ? first.addresses[0] : '127.0.0.1';
      const d: LabDashboard = {
        url: `${scheme}://${host}:${spec.http.port}/`,
        token,
        ca: join(spec.tls_dir, 'ca.crt'),
      };
      writeFileAtomic(dashboardFile(lab), `${JSON.stringify(d, null, 2)}\n`, 0o600);
      say(`dashboard at ${d.url} (admin token in ${dashboardFile(lab)})`);
      return;
    }
    if (Date.now() > until)
      throw new UserError(`cvserver token create did not succeed within 60 s: ${r.stderr.trim()}`);
    await sleep(1000);
  }
}

export const clusterHooks: LabHooks = {
  init: initClusterHook,
  apply: applyClusterHook,
  dashboard: dashboardHook,
  waitForDemo: waitForDemoHook,
};

/** Network and node processes only (tests with a stand-in node command; `lab up --no-cluster`). */
export const noHooks: LabHooks = {
  init: async () => {},
  apply: async () => {},
  dashboard: async () => {},
  waitForDemo: async () => {},
};
