/**
 * A replicated volume on this one machine: two or three replica "nodes" (each its own cvserver state
 * directory, daemon, TCP port) plus an optional diskless tiebreaker, driven through the real CLI.
 * With `netns`, every node lives in its own network namespace wired to a bridge in a hub namespace,
 * so a test can cut one node off (link down) the way a dead switch port would. Everything it made
 * (mounts, loop devices, daemons it started, namespaces, files) is removed by `cleanup()`, also
 * after a failure.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir } from './cli.ts';

export interface ReplicaNode {
  name: string;
  stateDir: string;
  mnt: string;
  host: string;
  port: number;
  netns: string | undefined;
  tiebreaker: boolean;
}

/** One peer as `volume status --json` shows it on a primary. */
export interface PeerStatus {
  node: string;
  connection: string;
  diskState?: string;
  diskStateSource?: string;
  diskStateUpdatedAt?: string;
  diskStateAgeMs?: number;
  outOfSyncBytes: number;
  resync?: unknown;
  lastResync?: { bytes: number; ms: number; endedAt?: string };
  lastError: string;
  bytesSent: number;
}

export interface ClusterOptions {
  replicas?: number;
  tiebreaker?: boolean;
  size?: string;
  netns?: boolean;
  quorum?: 'suspend-io' | 'io-error' | 'off';
  afterSplitBrain?: string;
  volume?: string;
  /** First TCP port (one per node, in order); default a random one below the ephemeral range. */
  basePort?: number;
  /** Part of the temporary directory's name (default `repl`). */
  dirTag?: string;
}

export interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

export class ReplicaCluster {
  readonly dir: string;
  readonly volume: string;
  readonly nodes: ReplicaNode[] = [];
  readonly secretFile: string;
  readonly o: ClusterOptions;
  #hub: string | undefined;
  #tag = `${process.pid % 100000}${Math.floor(Math.random() * 100)}`;

  constructor(o: ClusterOptions = {}) {
    this.o = o;
    this.dir = tempDir(o.dirTag ?? 'repl');
    this.volume = o.volume ?? 'vol';
    this.secretFile = join(this.dir, 'secret');
    writeFileSync(this.secretFile, `${randomSecret()}\n`, { mode: 0o600 });
    const names = ['a', 'b', 'c'].slice(0, o.replicas ?? 3);
    if (o.tiebreaker) names.push('tb');
    const basePort = o.basePort ?? 20000 + Math.floor(Math.random() * 12000); // below the ephemeral range (32768+)
    const subnet = 10 + (Number(this.#tag) % 200);
    names.forEach((name, i) => {
      const stateDir = join(this.dir, name);
      mkdirSync(join(stateDir, 'mnt'), { recursive: true });
      this.nodes.push({
        name,
        stateDir,
        mnt: join(stateDir, 'mnt'),
        host: o.netns ? `10.231.${subnet}.${i + 1}` : '127.0.0.1',
        port: o.netns ? 7789 : basePort + i,
        netns: o.netns ? `cvt${this.#tag}${name}` : undefined,
        tiebreaker: name === 'tb',
      });
    });
  }

  node(name: string): ReplicaNode {
    const n = this.nodes.find((x) => x.name === name);
    assert.ok(n, `no node ${name}`);
    return n;
  }

  /** Namespaces (if any), volumes on every node (same UUID, blank), every daemon up as secondary. */
  setup(): void {
    if (this.o.netns) this.#makeNetwork();
    let uuid: string | undefined;
    for (const n of this.nodes) {
      const meta = JSON.parse(this.ok(n.name, this.createArgs(n.name, uuid, true))) as { uuid: string };
      uuid ??= meta.uuid;
    }
    for (const n of this.nodes) this.ok(n.name, ['volume', 'up', this.volume]);
  }

  /** `volume create` for one node; with a UUID it joins (blank: no initial sync, else full sync). */
  createArgs(name: string, uuid?: string, blank = false): string[] {
    const n = this.node(name);
    const args = [
      'volume',
      'create',
      this.volume,
      '--size',
      this.o.size ?? '128M',
      '--node',
      n.name,
      '--listen',
      `${n.host}:${n.port}`,
      '--secret-file',
      this.secretFile,
      '--quorum',
      this.o.quorum ?? 'suspend-io',
      '--after-split-brain',
      this.o.afterSplitBrain ?? 'disconnect',
      '--json',
    ];
    for (const p of this.nodes.filter((x) => x !== n))
      args.push(p.tiebreaker ? '--tiebreaker' : '--peer', `${p.name}=${p.host}:${p.port}`);
    if (uuid) args.push('--uuid', uuid);
    if (uuid && blank) args.push('--blank');
    if (n.tiebreaker) args.push('--diskless');
    return args;
  }

  /** Runs `cvserver ARGS` as node `name` (inside its namespace when there is one). */
  run(name: string, args: string[], timeoutMs = 300_000): Run {
    const n = this.node(name);
    const bin = join(ROOT, 'bin', 'cvserver');
    const [cmd, argv] = n.netns ? ['nsenter', [`--net=/run/netns/${n.netns}`, bin, ...args]] : [bin, args];
    const r = spawnSync(cmd, argv, {
      env: { ...process.env, CVSERVER_STATE_DIR: n.stateDir },
      encoding: 'utf8',
      timeout: timeoutMs,
    });
    return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  ok(name: string, args: string[]): string {
    const r = this.run(name, args);
    assert.equal(r.status, 0, `[${name}] cvserver ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
    return r.stdout;
  }

  // biome-ignore lint/suspicious/noExplicitAny: status JSON is inspected loosely by tests
  status(name: string): any {
    // Exit 3 means "failed volume": still a status.
    const r = this.run(name, ['volume', 'status', this.volume, '--json']);
    assert.ok(r.status === 0 || r.status === 3, `[${name}] volume status failed (${r.status}): ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  /** What node `name` reports about its peer `peer` (connection, disk state, resync, ...). */
  peer(name: string, peer: string): PeerStatus {
    const peers = this.status(name).daemon.replication.peers as PeerStatus[];
    const p = peers.find((x) => x.node === peer);
    assert.ok(p, `${name} has no peer ${peer} in its status`);
    return p;
  }

  /** The volume daemon's pid on that node (for kill -9). */
  daemonPid(name: string): number {
    return Number(readFileSync(join(this.volumeDir(name), 'run', 'daemon.pid'), 'utf8'));
  }

  volumeDir(name: string): string {
    return join(this.node(name).stateDir, 'volumes', this.volume);
  }

  /** Waits until `cond` holds (polling); fails with `what` after `ms`. */
  async until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        if (cond()) return;
      } catch {}
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Cuts a node's network link (netns clusters): nothing goes in or out, no RST either. */
  cut(name: string): void {
    sh('ip', ['-n', this.#hub!, 'link', 'set', `h${this.#tag}${name}`, 'down']);
  }

  heal(name: string): void {
    sh('ip', ['-n', this.#hub!, 'link', 'set', `h${this.#tag}${name}`, 'up']);
  }

  #makeNetwork(): void {
    this.#hub = `cvt${this.#tag}hub`;
    sh('ip', ['netns', 'add', this.#hub]);
    sh('ip', ['-n', this.#hub, 'link', 'add', 'br0', 'type', 'bridge']);
    sh('ip', ['-n', this.#hub, 'link', 'set', 'br0', 'up']);
    for (const n of this.nodes) {
      const ns = n.netns!;
      const hubSide = `h${this.#tag}${n.name}`;
      sh('ip', ['netns', 'add', ns]);
      sh('ip', ['link', 'add', hubSide, 'netns', this.#hub, 'type', 'veth', 'peer', 'eth0', 'netns', ns]);
      sh('ip', ['-n', this.#hub, 'link', 'set', hubSide, 'master', 'br0', 'up']);
      sh('ip', ['-n', ns, 'addr', 'add', `${n.host}/24`, 'dev', 'eth0']);
      sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
  }

  /** Tears everything down; only what this cluster made, by path, pid and name. */
  cleanup(): void {
    for (const n of this.nodes) {
      const r = this.run(n.name, ['volume', 'down', this.volume], 60_000);
      if (r.status !== 0) this.#forceDown(n);
    }
    for (const n of this.nodes) if (n.netns) spawnSync('ip', ['netns', 'del', n.netns]);
    if (this.#hub) spawnSync('ip', ['netns', 'del', this.#hub]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  #forceDown(n: ReplicaNode): void {
    const vol = this.volumeDir(n.name);
    // The daemon first: with it gone, I/O it held (suspended writes) fails and the device lets go.
    const pidFile = join(vol, 'run', 'daemon.pid');
    if (existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, 'utf8'));
      const cmdline = existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, 'utf8') : '';
      if (pid && cmdline.includes(vol)) process.kill(pid, 'SIGKILL');
    }
    spawnSync('umount', ['-l', n.mnt]);
    const loops = spawnSync('losetup', ['-j', join(vol, 'fuse', 'device')], { encoding: 'utf8' }).stdout;
    for (const line of loops.split('\n').filter(Boolean)) spawnSync('losetup', ['-d', line.split(':')[0]!]);
    spawnSync('umount', ['-l', join(vol, 'fuse')]);
  }
}

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function randomSecret(): string {
  return randomBytes(32).toString('base64');
}
