/**
 * bench/replication: the replication engine at block-device level, on files in a temp dir, in one run:
 *   (a) LocalDevice directly (the baseline),
 *   (b) ReplicatedDevice with 1 peer (2 replicas),
 *   (c) ReplicatedDevice with 2 peers (3 replicas),
 * the peers being real ReplicaServers in child processes on loopback (as on separate nodes).
 * Workloads: sequential 1 MiB writes with a flush after each (queue depth 1), sequential 1 MiB
 * writes with 4 in flight and a flush every 32 MiB, and 4 KiB random writes with a flush after each
 * write, 4 in flight (about what ext4 on a loop device produces); then latencies at queue depth 1
 * (case lat: 4 KiB write, flush, a guest 1 MiB write+fsync as 5 requests). Prints MB/s, IOPS and b/a, c/a.
 * Then a resync: the peer goes away, the primary writes, the peer returns; prints dirty bytes, bytes
 * on the wire and resync MB/s. No assertions: figures only.
 *   scripts/node bench/replication.ts [--seconds 3] [--size 256M] [--only 1|2] [--cases seq1,seq4,rand,lat]
 *     [--dir /dev/shm (engine cost without the disk)] [--profile (CPU profiles of the replicas in ./prof)]
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { allocAlignedBuffers } from '../src/lib/aligned-buffers.ts';
import { parseSize } from '../src/lib/size.ts';
import type { BlockDevice } from '../src/volume/block-device.ts';
import { LocalDevice } from '../src/volume/local-device.ts';
import { newMetadata, writeMetadata } from '../src/volume/metadata.ts';
import { ReplicaServer } from '../src/volume/replication/replica-server.ts';
import { MetadataReplicaStore } from '../src/volume/replication/replica-store.ts';
import { ReplicatedDevice } from '../src/volume/replication/replicated-device.ts';

const secret = Buffer.from('bench-cluster-secret');
const volumeUuid = '6f0f5c1e-0000-4000-8000-00000000beef';
const quiet = { info: () => undefined, warn: () => undefined };

interface ChildArgs {
  node: string;
  dir: string;
  size: number;
  port: number;
}

// ---------------------------------------------------------------- replica child process

async function replicaChild(args: ChildArgs): Promise<void> {
  const store = new MetadataReplicaStore(args.dir);
  const device = await LocalDevice.open(join(args.dir, 'data'), args.size, {
    inline: process.env.CVR_BENCH_INLINE !== '0',
  });
  let server: ReplicaServer | undefined;
  let port = args.port;
  const start = async () => {
    server = new ReplicaServer({
      node: args.node,
      volumeUuid,
      secret,
      host: '127.0.0.1',
      port,
      device,
      size: args.size,
      store,
      log: quiet,
    });
    port = await server.listen();
    process.send?.({ port });
  };
  process.on('message', (m: string) => {
    if (m === 'stop') void server?.close().then(() => process.send?.({ stopped: true }));
    else if (m === 'start') void start();
    else if (m === 'exit') void server?.close().then(() => process.exit(0));
  });
  await start();
}

class Replica {
  readonly node: string;
  readonly dir: string;
  child: ChildProcess;
  port = 0;
  constructor(node: string, dir: string, size: number) {
    this.node = node;
    this.dir = dir;
    const a: ChildArgs = { node, dir, size, port: 0 };
    const argv = ['--replica', JSON.stringify(a)];
    if (profile) argv.push('--profile');
    this.child = fork(import.meta.filename, argv, {
      execArgv: profile
        ? [...process.execArgv, '--cpu-prof', `--cpu-prof-dir=${profileDir}`]
        : process.execArgv,
    });
  }
  #next<T>(key: string): Promise<T> {
    return new Promise((resolve) => {
      const on = (m: Record<string, unknown>) => {
        if (key in m) {
          this.child.off('message', on);
          resolve(m[key] as T);
        }
      };
      this.child.on('message', on);
    });
  }
  async started(): Promise<number> {
    this.port = await this.#next<number>('port');
    return this.port;
  }
  async stop(): Promise<void> {
    const p = this.#next('stopped');
    this.child.send('stop');
    await p;
  }
  async start(): Promise<void> {
    const p = this.#next<number>('port');
    this.child.send('start');
    await p;
  }
  async exit(): Promise<void> {
    const done = new Promise((r) => this.child.once('exit', r));
    this.child.send('exit');
    await done;
  }
}

// ---------------------------------------------------------------- main process

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    size: { type: 'string', default: '256M' },
    replica: { type: 'string' },
    profile: { type: 'boolean', default: false },
    only: { type: 'string' },
    cases: { type: 'string', default: 'seq1,seq4,rand,lat' },
    dir: { type: 'string' },
  },
});
const profile = values.profile;
const profileDir = join(process.cwd(), 'prof');

function makeVolumeDir(dir: string, size: number): void {
  mkdirSync(dir, { recursive: true });
  const meta = newMetadata('bench', size);
  writeMetadata(dir, { ...meta, uuid: volumeUuid, generation: { current: 'b1', bitmap: '0', history: [] } });
  // Fully allocated, so the runs measure writes and not block allocation.
  const fd = openSync(join(dir, 'data'), 'w');
  const zeros = Buffer.alloc(4 * 1024 * 1024);
  for (let at = 0; at < size; at += zeros.length)
    writeSync(fd, zeros, 0, Math.min(zeros.length, size - at), at);
  // Clean pages: otherwise every O_DIRECT write first waits for the writeback of the cached zeros.
  fsyncSync(fd);
  closeSync(fd);
}

interface Figures {
  seqSyncMBps: number;
  seqMBps: number;
  randIops: number;
  /** Medians in µs (case `lat`), 0 when not run. */
  lat: { write4k: number; flush: number; guestFsync: number };
}

const MiB = 1024 * 1024;

async function timed(
  seconds: number,
  depth: number,
  op: (worker: number) => Promise<number>,
): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let bytes = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: depth }, async (_, w) => {
      while (performance.now() < end) {
        const n = await op(w); // not `bytes += await op()`: that reads `bytes` before the await
        bytes += n;
      }
    }),
  );
  return bytes / ((performance.now() - t0) / 1000);
}

async function workloads(dev: BlockDevice, seconds: number): Promise<Figures> {
  // Aligned memory, as the FUSE layer hands its WRITE payloads to the device.
  const big = allocAlignedBuffers(MiB)[0]!;
  const small = allocAlignedBuffers(4096)[0]!;
  randomBytes(MiB).copy(big);
  randomBytes(4096).copy(small);
  const blocks = Math.floor(dev.size / MiB);
  const cases = new Set(values.cases.split(','));
  // Sequential 1 MiB, write + flush, one at a time (dd oflag=dsync).
  let at = 0;
  const seqSync = await timed(cases.has('seq1') ? seconds : 0, 1, async () => {
    await dev.write((at++ % blocks) * MiB, big);
    await dev.flush();
    return MiB;
  });
  // Sequential 1 MiB, 4 in flight, a flush every 32 MiB (dd conv=fsync through ext4 + loop).
  let next = 0;
  let sinceFlush = 0;
  const seq = await timed(cases.has('seq4') ? seconds : 0, 4, async () => {
    const off = (next++ % blocks) * MiB;
    await dev.write(off, big);
    if (++sinceFlush >= 32) {
      sinceFlush = 0;
      await dev.flush();
    }
    return MiB;
  });
  await dev.flush();
  // 4 KiB random, write + flush per write, 4 in flight (fio --rw=randwrite --bs=4k --fsync=1, iodepth 4).
  const pages = Math.floor(dev.size / 4096);
  const rand = await timed(cases.has('rand') ? seconds : 0, 4, async () => {
    await dev.write(Math.floor(Math.random() * pages) * 4096, small);
    await dev.flush();
    return 4096;
  });
  // Latency, one request at a time: a 4 KiB write, a flush after it, and a guest 1 MiB write+fsync
  // as it reaches the daemon through ext4 (WRITE 1M, WRITE 12K journal, FSYNC, WRITE 4K commit,
  // FSYNC, strictly in series). Medians in µs.
  const lat = { write4k: 0, flush: 0, guestFsync: 0 };
  if (cases.has('lat')) {
    const w: number[] = [];
    const f: number[] = [];
    const g: number[] = [];
    const journal = allocAlignedBuffers(12 * 1024)[0]!;
    const end = performance.now() + seconds * 1000;
    for (let i = 0; performance.now() < end; i++) {
      const off = Math.floor(Math.random() * pages) * 4096;
      let t = performance.now();
      await dev.write(off, small);
      w.push(performance.now() - t);
      t = performance.now();
      await dev.flush();
      f.push(performance.now() - t);
      t = performance.now();
      await dev.write((i % (blocks - 2)) * MiB, big);
      await dev.write((blocks - 1) * MiB + (i % 64) * 16384, journal);
      await dev.flush();
      await dev.write((blocks - 1) * MiB + (i % 64) * 16384 + 12288, small);
      await dev.flush();
      g.push(performance.now() - t);
    }
    lat.write4k = median(w) * 1000;
    lat.flush = median(f) * 1000;
    lat.guestFsync = median(g) * 1000;
  }
  return { seqSyncMBps: seqSync / 1e6, seqMBps: seq / 1e6, randIops: rand / 4096, lat };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

async function replicated(
  work: string,
  name: string,
  peers: Replica[],
  size: number,
): Promise<{ dev: ReplicatedDevice; dir: string }> {
  const dir = join(work, name);
  makeVolumeDir(dir, size);
  const dev = new ReplicatedDevice(
    await LocalDevice.open(join(dir, 'data'), size),
    new MetadataReplicaStore(dir),
    {
      node: name,
      volumeUuid,
      secret,
      peers: peers.map((p) => ({ node: p.node, host: '127.0.0.1', port: p.port })),
      quorum: 'off',
      afterSplitBrain: 'disconnect',
      stateDir: join(dir, 'replication'),
    },
    quiet,
  );
  const r = await dev.promote(1);
  if (!r.ok) throw new Error(`promote: ${r.reason}`);
  const deadline = Date.now() + 5000;
  while (dev.status().peers.some((p) => p.connection !== 'Connected')) {
    if (Date.now() > deadline)
      throw new Error(`peers did not connect: ${JSON.stringify(dev.status().peers)}`);
    await new Promise((res) => setTimeout(res, 20));
  }
  return { dev, dir };
}

async function main(): Promise<void> {
  const seconds = Number(values.seconds);
  const size = parseSize(values.size) ?? 256 * MiB;
  const work = mkdtempSync(join(values.dir ?? tmpdir(), 'cvs-repl-bench-'));
  const replicas: Replica[] = [];
  try {
    console.log(`replication bench: ${seconds} s per case, ${size / MiB} MiB volume, files in ${work}`);
    const row = (label: string, f: Figures, base?: Figures) => {
      const r = (x: number, y: number | undefined) => (y ? ` (${(x / y).toFixed(2)})` : '');
      console.log(
        `${label.padEnd(26)} seq 1M+flush qd1 ${f.seqSyncMBps.toFixed(0).padStart(5)} MB/s${r(f.seqSyncMBps, base?.seqSyncMBps)}` +
          `  seq 1M qd4 ${f.seqMBps.toFixed(0).padStart(5)} MB/s${r(f.seqMBps, base?.seqMBps)}` +
          `  rand 4k+flush qd4 ${f.randIops.toFixed(0).padStart(6)} IOPS${r(f.randIops, base?.randIops)}`,
      );
      if (f.lat.guestFsync > 0)
        console.log(
          `${''.padEnd(26)} qd1 medians: 4k write ${f.lat.write4k.toFixed(0)} µs, flush ${f.lat.flush.toFixed(0)} µs, ` +
            `guest 1M write+fsync (5 requests) ${f.lat.guestFsync.toFixed(0)} µs`,
        );
    };
    const only = values.only;

    // (a) local
    const aDir = join(work, 'local');
    makeVolumeDir(aDir, size);
    const local = await LocalDevice.open(join(aDir, 'data'), size);
    const a = await workloads(local, seconds);
    await local.close();
    row('(a) local', a);

    for (const n of [1, 2]) {
      if (only && only !== String(n)) continue;
      const peers: Replica[] = [];
      for (let i = 0; i < n; i++) {
        const node = `r${n}p${i}`;
        const dir = join(work, node);
        makeVolumeDir(dir, size);
        const rep = new Replica(node, dir, size);
        replicas.push(rep);
        peers.push(rep);
        await rep.started();
      }
      const { dev } = await replicated(work, `r${n}primary`, peers, size);
      const f = await workloads(dev, seconds);
      row(`(${n === 1 ? 'b' : 'c'}) ${n + 1} replicas`, f, a);

      if (n === 1) {
        // Resync: the peer goes away, the primary writes (random 4 KiB + some 1 MiB), the peer returns.
        const peer = peers[0]!;
        await peer.stop();
        while (dev.status().peers[0]?.connection === 'Connected') await new Promise((r) => setTimeout(r, 10));
        const small = randomBytes(4096);
        const big = randomBytes(MiB);
        let written = 0;
        for (let i = 0; i < 2000; i++) {
          await dev.write(Math.floor(Math.random() * (size / 4096)) * 4096, small);
          written += 4096;
        }
        for (let i = 0; i < 32; i++) {
          await dev.write(Math.floor(Math.random() * (size / MiB)) * MiB, big);
          written += MiB;
        }
        await dev.flush();
        const dirty = dev.status().peers[0]!.outOfSyncBytes;
        const sentBefore = dev.status().peers[0]!.bytesSent;
        await peer.start();
        const deadline = Date.now() + 120_000;
        for (;;) {
          const st = dev.status().peers[0]!;
          if (st.connection === 'Connected' && st.outOfSyncBytes === 0 && st.lastResync) break;
          if (Date.now() > deadline) throw new Error(`resync did not finish: ${JSON.stringify(st)}`);
          await new Promise((r) => setTimeout(r, 10));
        }
        const st = dev.status().peers[0]!;
        const sent = st.bytesSent - sentBefore;
        const rs = st.lastResync!;
        console.log(
          `    resync: written ${(written / MiB).toFixed(1)} MiB, dirty ${(dirty / MiB).toFixed(1)} MiB, ` +
            `on the wire ${(sent / MiB).toFixed(1)} MiB (${(sent / dirty).toFixed(3)}x dirty), ` +
            `${rs.ms} ms, ${(rs.bytes / 1e6 / (rs.ms / 1000)).toFixed(0)} MB/s`,
        );
      }
      await dev.close();
      for (const p of peers) await p.exit();
    }
  } finally {
    for (const r of replicas) if (r.child.exitCode === null) r.child.kill();
    rmSync(work, { recursive: true, force: true });
  }
}

if (values.replica) await replicaChild(JSON.parse(values.replica) as ChildArgs);
else await main();
