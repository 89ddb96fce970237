/**
 * bench/reconciliation: what shipping the activity log to the replicas (reconciliation.ts, protocol
 * version 4) costs on the write path, against a baseline in the same run: two primary/replica pairs
 * on files in a temp dir over loopback, in one process, whose replica speaks version 3 (no ACTIVITY:
 * the baseline) or 4. Rounds alternate between the pairs. Workloads, 4 KiB random writes each
 * followed by a flush (queue depth 1): `churn` over the whole device with a 4-extent activity log
 * (nearly every write commits the log: the worst case), `hot` inside the log's extents (no commit:
 * the steady path). Prints IOPS and v4/v3. No assertions: figures only.
 *   scripts/node bench/reconciliation.ts [--seconds 3] [--rounds 3]
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LocalDevice } from '../src/volume/local-device.ts';
import { ReplicaServer } from '../src/volume/replication/replica-server.ts';
import { MemoryReplicaStore, type ReplicaMeta } from '../src/volume/replication/replica-store.ts';
import { ReplicatedDevice } from '../src/volume/replication/replicated-device.ts';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' } },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const SIZE = 256 * 1024 * 1024;
const AL_EXTENT = 4 * 1024 * 1024;
const secret = Buffer.from('bench-cluster-secret');
const volumeUuid = '6f0f5c1e-0000-4000-8000-00000000bee4';
const quiet = { info: () => undefined, warn: () => undefined };
const initial: ReplicaMeta = {
  generation: { current: 'a1', bitmap: '0', history: [] },
  diskState: 'UpToDate',
  epoch: 0,
  primaryOpen: false,
};

async function file(dir: string, name: string): Promise<LocalDevice> {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(0));
  truncateSync(path, SIZE);
  return LocalDevice.open(path, SIZE);
}

function config(dir: string, node: string, peers: Array<{ node: string; host: string; port: number }>) {
  return {
    node,
    volumeUuid,
    secret,
    peers,
    quorum: 'off' as const,
    afterSplitBrain: 'disconnect' as const,
    stateDir: join(dir, `${node}-state`),
    alExtentSize: AL_EXTENT,
    alSlots: 4,
  };
}

/** A primary and its replica; the replica speaks protocol versions up to `maxVersion`. */
async function pair(dir: string, maxVersion: number) {
  const tag = `v${maxVersion}`;
  const store = new MemoryReplicaStore(initial);
  // The replica's own engine keeps the record (as in the daemon: `divergence: device`).
  const replica = new ReplicatedDevice(
    await file(dir, `b-${tag}`),
    store,
    config(dir, `b-${tag}`, []),
    quiet,
  );
  const server = new ReplicaServer({
    node: 'b',
    volumeUuid,
    secret,
    host: '127.0.0.1',
    port: 0,
    device: replica.local,
    size: SIZE,
    store,
    divergence: replica,
    versions: { min: 2, max: maxVersion },
    log: quiet,
  });
  const port = await server.listen();
  const primary = new ReplicatedDevice(
    await file(dir, `a-${tag}`),
    new MemoryReplicaStore(initial),
    config(dir, `a-${tag}`, [{ node: 'b', host: '127.0.0.1', port }]),
    quiet,
  );
  const r = await primary.promote(1);
  if (!r.ok) throw new Error(r.reason);
  while (primary.status().peers[0]?.connection !== 'Connected')
    await new Promise((res) => setTimeout(res, 10));
  return {
    tag,
    primary,
    close: async () => {
      await primary.close();
      await server.close();
      await replica.close();
    },
  };
}

async function run(dev: ReplicatedDevice, span: number): Promise<number> {
  const data = randomBytes(4096);
  const end = performance.now() + SECONDS * 1000;
  let n = 0;
  while (performance.now() < end) {
    const offset = Math.floor(Math.random() * (span / 4096)) * 4096;
    await dev.write(offset, data);
    await dev.flush();
    n++;
  }
  return n / SECONDS;
}

const dir = mkdtempSync(join(tmpdir(), 'cv-bench-recon-'));
try {
  const pairs = [await pair(dir, 3), await pair(dir, 4)];
  for (const [name, span] of [
    ['churn', SIZE],
    ['hot', 2 * AL_EXTENT],
  ] as const) {
    const iops: Record<string, number[]> = { v3: [], v4: [] };
    for (let round = 0; round < ROUNDS; round++)
      for (const p of round % 2 ? [...pairs].reverse() : pairs) iops[p.tag]!.push(await run(p.primary, span));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    console.log(
      `${name}: v3 (baseline) ${iops.v3!.map((x) => x.toFixed(0)).join('/')} IOPS, v4 ${iops.v4!.map((x) => x.toFixed(0)).join('/')} IOPS; v4/v3 ${(mean(iops.v4!) / mean(iops.v3!)).toFixed(3)}`,
    );
  }
  for (const p of pairs) await p.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
