/**
 * Replication engine over real TCP on loopback with file-backed devices (no FUSE needed):
 * protocol C writes to three replicas, a peer stopped mid-stream and resynced by bitmap (bytes on
 * the wire counted), quorum loss suspends writes, a newer epoch fences the old primary, and hostile
 * input on a replica port changes nothing; a tiebreaker that witnessed a newer generation refuses the
 * promotion of a replica that was away.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { LocalDevice } from '../../src/volume/local-device.ts';
import { DirtyBitmap, saveBitmapAsync } from '../../src/volume/replication/bitmap.ts';
import { clientHandshake } from '../../src/volume/replication/connection.ts';
import { encodeFrame, FRAME_MAGIC } from '../../src/volume/replication/frame.ts';
import type { PeerAddress } from '../../src/volume/replication/peer-link.ts';
import type { Message } from '../../src/volume/replication/protocol.ts';
import { ReplicaServer } from '../../src/volume/replication/replica-server.ts';
import { MemoryReplicaStore, type ReplicaMeta } from '../../src/volume/replication/replica-store.ts';
import { ReplicatedDevice } from '../../src/volume/replication/replicated-device.ts';

const SIZE = 32 * 1024 * 1024;
const secret = Buffer.from('test-cluster-secret');
const volumeUuid = '6f0f5c1e-0000-4000-8000-000000000001';
const quiet = { info: () => undefined, warn: () => undefined };
const initial: ReplicaMeta = {
  generation: { current: 'a1', bitmap: '0', history: [] },
  diskState: 'UpToDate',
  epoch: 0,
  primaryOpen: false,
};

const t0 = Date.now();
const mark = (what: string) => console.log(`${((Date.now() - t0) / 1000).toFixed(1)}s ${what}`);

async function until(cond: () => boolean, ms = 10000, what = cond.toString()): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function makeReplica(dir: string, node: string, port = 0, durableWrites = true) {
  const file = join(dir, `${node}.data`);
  writeFileSync(file, Buffer.alloc(0));
  const { truncateSync } = await import('node:fs');
  truncateSync(file, SIZE);
  const device = await LocalDevice.open(file, SIZE);
  const store = new MemoryReplicaStore(initial);
  const start = async (p: number) => {
    const server = new ReplicaServer({
      node,
      volumeUuid,
      secret,
      host: '127.0.0.1',
      port: p,
      device,
      size: SIZE,
      store,
      durableWrites,
      log: quiet,
    });
    const bound = await server.listen();
    return { server, port: bound };
  };
  const first = await start(port);
  return { node, file, device, store, ...first, start };
}

const digest = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** A node's replication engine on `device`, its engine files under `dir`. */
function newDevice(
  dir: string,
  node: string,
  device: LocalDevice,
  peers: PeerAddress[],
  quorum: 'off' | 'suspend-io',
  store = new MemoryReplicaStore(initial),
): ReplicatedDevice {
  return new ReplicatedDevice(
    device,
    store,
    {
      node,
      volumeUuid,
      secret,
      peers,
      quorum,
      afterSplitBrain: 'disconnect',
      stateDir: join(dir, `${node}-state`),
    },
    quiet,
  );
}

/** Node a, a would-be primary with one data peer b; closes both and removes `dir` when the test ends. */
async function makePrimaryWithPeer(
  t: TestContext,
  dir: string,
  b: Awaited<ReturnType<typeof makeReplica>>,
  quorum: 'off' | 'suspend-io',
) {
  const aFile = join(dir, 'a.data');
  writeFileSync(aFile, Buffer.alloc(SIZE));
  const a = newDevice(
    dir,
    'a',
    await LocalDevice.open(aFile, SIZE),
    [{ node: 'b', host: '127.0.0.1', port: b.port }],
    quorum,
  );
  t.after(async () => {
    await a.close().catch(() => undefined);
    await b.server.close();
    await b.device.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { a, aFile };
}

test('three replicas: protocol C, peer loss, bitmap resync of only the dirty bytes, quorum, fencing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-'));
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  const b = await makeReplica(dir, 'b');
  const c = await makeReplica(dir, 'c');
  let bServer = b.server;
  let cServer = c.server;
  cleanups.push(
    () => b.device.close(),
    () => c.device.close(),
  );
  cleanups.push(
    () => bServer.close(),
    () => cServer.close(),
  );
  const aFile = join(dir, 'a.data');
  writeFileSync(aFile, Buffer.alloc(SIZE));
  const aStore = new MemoryReplicaStore(initial);
  const a = new ReplicatedDevice(
    await LocalDevice.open(aFile, SIZE),
    aStore,
    {
      node: 'a',
      volumeUuid,
      secret,
      peers: [
        { node: 'b', host: '127.0.0.1', port: b.port },
        { node: 'c', host: '127.0.0.1', port: c.port },
      ],
      quorum: 'suspend-io',
      afterSplitBrain: 'disconnect',
      stateDir: join(dir, 'a-state'),
    },
    quiet,
  );
  cleanups.push(() => a.close());

  assert.deepEqual(await a.promote(1), { ok: true });
  assert.equal(a.status().role, 'Primary');
  await until(() => a.status().peers.every((p) => p.connection === 'Connected'));

  mark('// Pipelined protocol C');
  // Pipelined protocol C writes: all in flight at once, each resolved only when on all three.
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 64; i++) writes.push(a.write(i * 65536, randomBytes(65536)));
  await Promise.all(writes);
  await a.flush();
  assert.equal(digest(aFile), digest(b.file));
  assert.equal(digest(aFile), digest(c.file));

  mark('// c goes away');
  // c goes away mid-stream; a keeps writing with quorum 2 of 3.
  const stream: Promise<void>[] = [];
  for (let i = 0; i < 32; i++) stream.push(a.write(8 * 1024 * 1024 + i * 65536, randomBytes(65536)));
  await cServer.close();
  for (let i = 32; i < 64; i++) stream.push(a.write(8 * 1024 * 1024 + i * 65536, randomBytes(65536)));
  await Promise.all(stream);
  await a.flush();
  await until(() => a.status().peers.find((p) => p.node === 'c')?.connection !== 'Connected');
  const dirty = a.status().peers.find((p) => p.node === 'c')!.outOfSyncBytes;
  assert.ok(dirty > 0 && dirty <= 4 * 1024 * 1024, `dirty ${dirty}`);
  assert.notEqual(a.status().generation.current, 'a1'); // new generation: a wrote without c

  mark('// c returns');
  // c returns: only the dirty extents travel.
  const sentBefore = a.status().peers.find((p) => p.node === 'c')!.bytesSent;
  cServer = (await c.start(c.port)).server;
  await until(() => {
    const p = a.status().peers.find((x) => x.node === 'c')!;
    return p.connection === 'Connected' && p.outOfSyncBytes === 0 && p.lastResync !== undefined;
  }, 20000);
  const sent = a.status().peers.find((p) => p.node === 'c')!.bytesSent - sentBefore;
  console.log(`resync: dirty ${dirty} bytes, sent ${sent} bytes on the wire (${(sent / dirty).toFixed(3)}x)`);
  assert.ok(sent <= dirty * 1.1, `sent ${sent} for ${dirty} dirty`);
  assert.equal(digest(aFile), digest(c.file));
  assert.deepEqual((await a.verify('c')).mismatches, []);
  assert.deepEqual((await a.verify('b')).mismatches, []);
  await until(() => c.store.load().generation.current === aStore.load().generation.current);

  mark('// Verify finds');
  // Verify finds a difference planted behind the engine's back and can repair it.
  const { openSync, writeSync, closeSync } = await import('node:fs');
  const fd = openSync(b.file, 'r+');
  writeSync(fd, Buffer.from('corrupt'), 0, 7, 5 * 65536 + 100);
  closeSync(fd);
  const v = await a.verify('b', { resync: true });
  assert.deepEqual(v.mismatches, [{ offset: 5 * 65536, length: 65536 }]);
  await until(
    () =>
      a.status().peers.find((p) => p.node === 'b')!.outOfSyncBytes === 0 &&
      a.status().peers.find((p) => p.node === 'b')!.connection === 'Connected',
  );
  assert.deepEqual((await a.verify('b')).mismatches, []);

  mark('// Cut off');
  // Cut off from both peers: writes suspend instead of proceeding alone, and resume with quorum.
  await bServer.close();
  await cServer.close();
  await until(() => !a.status().quorum.hasQuorum);
  let done = false;
  const pending = a.write(0, Buffer.alloc(4096, 7)).then(() => {
    done = true;
  });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(done, false);
  assert.equal(a.status().quorum.suspendedWrites, 1);
  bServer = (await b.start(b.port)).server;
  await pending;
  assert.equal(done, true);

  mark('// A newer epoch');
  // A newer epoch elsewhere (b promoted by the cluster with epoch 5): a is fenced, its writes fail.
  b.store.save({ ...b.store.load(), epoch: 5 });
  a.dropPeer('b');
  await until(() => a.status().fenced, 10000);
  await assert.rejects(a.write(0, Buffer.alloc(4096)), /fenced|EIO/);
  assert.equal(b.store.load().epoch, 5);
});

test('hostile input on a replica port: connection closed, server up, data unchanged', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-hostile-'));
  const r = await makeReplica(dir, 'x');
  t.after(async () => {
    await r.server.close();
    await r.device.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const before = digest(r.file);
  const rawSend = (bytes: Buffer) =>
    new Promise<void>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: r.port }, () => s.end(bytes));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
  await rawSend(randomBytes(5000));
  const header = Buffer.alloc(10);
  header.writeUInt32BE(FRAME_MAGIC, 0);
  await rawSend(header); // truncated header
  const huge = encodeFrame(Buffer.alloc(32), { type: 10, seq: 0, epoch: 0, payload: Buffer.alloc(10) });
  huge.writeUInt32BE(0x7fffffff, 8);
  await rawSend(huge);
  // Wrong secret: the handshake fails on both sides.
  const s1 = connect({ host: '127.0.0.1', port: r.port });
  await assert.rejects(
    clientHandshake(s1, { node: 'evil', volumeUuid, secret: Buffer.from('wrong'), timeoutMs: 2000 }),
    /authentication/,
  );

  // A genuine client: a write under an old epoch is refused; a forged frame (wrong key) closes it.
  r.store.save({ ...r.store.load(), epoch: 7 });
  const s2 = connect({ host: '127.0.0.1', port: r.port });
  await new Promise((res) => s2.once('connect', res));
  const conn = await clientHandshake(s2, { node: 'p', volumeUuid, secret });
  const replies: Message[] = [];
  conn.onMessage((m) => replies.push(m));
  conn.epoch = 3;
  conn.send({ type: 'write', id: 1, offset: 0, data: Buffer.alloc(4096, 1), resync: false });
  await until(() => replies.some((m) => m.type === 'ack'));
  assert.deepEqual(
    replies.find((m) => m.type === 'ack'),
    { type: 'ack', id: 1, status: 2 },
  );
  const closed = new Promise<string>((res) => conn.onClose(res));
  s2.write(encodeFrame(Buffer.alloc(32, 9), { type: 10, seq: 1, epoch: 9, payload: Buffer.alloc(4107, 1) }));
  await closed;

  // Still serving, nothing written.
  await until(() => r.server.status().closedForBadInput >= 4);
  const s3 = connect({ host: '127.0.0.1', port: r.port });
  await new Promise((res) => s3.once('connect', res));
  const ok = await clientHandshake(s3, { node: 'p', volumeUuid, secret });
  ok.close('done');
  assert.equal(digest(r.file), before);
  assert.equal(r.server.status().writesApplied, 0);
});

test('split-brain: detected at reconnect, stays disconnected, resolved by command with the loser blocks saved', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-sb-'));
  const b = await makeReplica(dir, 'b');
  const { a, aFile } = await makePrimaryWithPeer(t, dir, b, 'off');
  // b was made primary alone earlier (quorum disabled) and wrote 64 KiB: its generation moved on.
  const bData = randomBytes(65536);
  await b.device.write(3 * 65536, bData);
  b.store.save({ ...b.store.load(), generation: { current: 'b2', bitmap: 'a1', history: [] } });
  // a, alone too, rotates at its first write and writes elsewhere.
  await b.server.close();
  assert.deepEqual(await a.promote(1, 200), { ok: true });
  await a.write(10 * 65536, randomBytes(65536));
  const bServer = (await b.start(b.port)).server;
  t.after(() => bServer.close());
  await until(() => a.status().peers[0]!.connection === 'SplitBrain');
  assert.match(a.status().peers[0]!.lastError, /split-brain/);
  assert.notEqual(digest(aFile), digest(b.file));

  const r = await a.resolveSplitBrainKeepLocal('b');
  assert.equal(r.bytesSaved, 2 * 65536); // b's own block and the one a wrote
  const saved = readFileSync(r.savedTo);
  assert.equal(Number(saved.readBigUInt64BE(0)), 3 * 65536);
  assert.ok(saved.subarray(12, 12 + 65536).equals(bData));
  await until(
    () => a.status().peers[0]!.connection === 'Connected' && a.status().peers[0]!.outOfSyncBytes === 0,
  );
  await a.flush();
  assert.equal(digest(aFile), digest(b.file));
});

test('a replica that was away cannot be promoted over a peer with newer data', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-stale-'));
  const b = await makeReplica(dir, 'b');
  b.store.save({ ...b.store.load(), generation: { current: 'c3', bitmap: 'a1', history: [] }, epoch: 2 });
  const { a } = await makePrimaryWithPeer(t, dir, b, 'suspend-io');
  const low = await a.promote(1);
  assert.equal(low.ok, false); // b has seen epoch 2 (learnt at handshake)
  const r = await a.promote(3);
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.reason, /newer or diverged data/);
  assert.equal(a.status().role, 'Secondary');
});

test('split-brain with discard-least-changes: the replica reports what it wrote alone (its bitmaps), the side with fewer changes is resynced', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-lc-'));
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  t.after(async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  const open = async (node: string, peer: string, peerPort: number) => {
    const file = join(dir, `${node}.data`);
    writeFileSync(file, Buffer.alloc(SIZE));
    const store = new MemoryReplicaStore(initial);
    const local = await LocalDevice.open(file, SIZE);
    const device = new ReplicatedDevice(
      local,
      store,
      {
        node,
        volumeUuid,
        secret,
        peers: [{ node: peer, host: '127.0.0.1', port: peerPort }],
        quorum: 'off',
        afterSplitBrain: 'discard-least-changes',
        stateDir: join(dir, `${node}-state`),
      },
      quiet,
    );
    cleanups.push(() => device.close());
    return { file, store, local, device };
  };
  // b: a replica server wired to its own ReplicatedDevice, as the volume daemon runs it.
  const b = await open('b', 'a', 1); // b's link to a is never started in this test
  const serve = async (port: number) => {
    const server = new ReplicaServer({
      node: 'b',
      volumeUuid,
      secret,
      host: '127.0.0.1',
      port,
      device: b.local,
      size: SIZE,
      store: b.store,
      isPrimary: () => b.device.role === 'Primary',
      divergence: b.device,
      log: quiet,
    });
    const bound = await server.listen();
    cleanups.push(() => server.close());
    return { server, port: bound };
  };
  const first = await serve(0);
  const bServer = first.server;
  const bPort = first.port;
  // b was primary alone and wrote 2 extents; then it stepped down.
  assert.deepEqual(await b.device.promote(1, 100), { ok: true });
  await b.device.write(3 * 65536, randomBytes(65536));
  await b.device.write(7 * 65536, randomBytes(4096));
  await b.device.demote();
  assert.equal(b.device.changedBlocks('a'), 2);
  assert.equal(bServer.state('a').changedBlocks, 2);
  // a, alone too (b unreachable), writes 5 extents. When b returns: split-brain, and b changed
  // fewer blocks, so b is discarded (its blocks saved to a file) and resynced from a.
  await bServer.close();
  const a = await open('a', 'b', bPort);
  assert.deepEqual(await a.device.promote(2, 100), { ok: true });
  for (let i = 0; i < 5; i++) await a.device.write((20 + i) * 65536, randomBytes(65536));
  const again = await serve(bPort);
  await until(
    () =>
      a.device.status().peers[0]!.connection === 'Connected' &&
      a.device.status().peers[0]!.outOfSyncBytes === 0,
    20000,
  );
  await a.device.flush();
  assert.equal(digest(a.file), digest(b.file));
  // b now holds a's data: what it wrote alone is gone, so it reports no changes of its own.
  await until(() => b.store.load().generation.current === a.store.load().generation.current);
  assert.equal(again.server.state('a').changedBlocks, 0);
});

test('concurrent writes, overlapping ones included, while a peer drops out and resyncs: both replicas end identical', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-race-'));
  const b = await makeReplica(dir, 'b');
  const { a, aFile } = await makePrimaryWithPeer(t, dir, b, 'off');
  assert.deepEqual(await a.promote(1), { ok: true });
  await until(() => a.status().peers[0]!.connection === 'Connected');
  const sizes = [4096, 65536, 1024 * 1024, 3 * 512];
  let stop = false;
  // Eight writers over the whole volume: writes in flight at once often overlap.
  const writer = async () => {
    while (!stop) {
      const n = sizes[Math.floor(Math.random() * sizes.length)]!;
      await a.write(Math.floor(Math.random() * ((SIZE - n) / 512)) * 512, randomBytes(n));
      if (Math.random() < 0.1) await a.flush();
    }
  };
  let server = b.server;
  t.after(() => server.close());
  for (let round = 0; round < 2; round++) {
    stop = false;
    const writers = Array.from({ length: 8 }, writer);
    await new Promise((r) => setTimeout(r, 200));
    await server.close();
    await new Promise((r) => setTimeout(r, 300));
    server = (await b.start(b.port)).server;
    await new Promise((r) => setTimeout(r, 500)); // writes go on during the resync
    stop = true;
    await Promise.all(writers);
    await until(() => {
      const p = a.status().peers[0]!;
      return p.connection === 'Connected' && p.outOfSyncBytes === 0 && !p.resync;
    }, 30000);
    await a.flush();
    assert.equal(digest(aFile), digest(b.file), `round ${round}`);
  }
});

test('flush: peers written since their last FLUSH get one; a repeated flush sends nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-flush-'));
  const b = await makeReplica(dir, 'b', 0, false);
  const { a } = await makePrimaryWithPeer(t, dir, b, 'off');
  assert.deepEqual(await a.promote(1), { ok: true });
  await until(() => a.status().peers[0]!.connection === 'Connected');
  const sent = () => a.status().peers[0]!.bytesSent;
  await a.write(0, randomBytes(4096));
  const afterWrite = sent();
  await a.flush();
  const afterFlush = sent();
  assert.ok(afterFlush > afterWrite, 'the first flush goes to the peer');
  // One guest fsync arrives as several FSYNCs: the next ones cost no round trip.
  await Promise.all([a.flush(), a.flush()]);
  await a.flush();
  assert.equal(sent(), afterFlush);
  await a.write(8192, randomBytes(4096));
  const w2 = sent();
  await Promise.all([a.flush(), a.flush(), a.flush()]); // concurrent: one FLUSH, the others wait for it
  assert.equal(sent() - w2, afterFlush - afterWrite);
});

test('durable writes: a replica that writes with O_DSYNC says so, and a flush sends it nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-durable-'));
  const b = await makeReplica(dir, 'b');
  const { a, aFile } = await makePrimaryWithPeer(t, dir, b, 'off');
  assert.deepEqual(await a.promote(1), { ok: true });
  await until(() => a.status().peers[0]!.connection === 'Connected');
  assert.equal(b.server.state('a').durableWrites, true);
  const sent = () => a.status().peers[0]!.bytesSent;
  const data = randomBytes(1 << 20);
  await a.write(0, data);
  const afterWrite = sent();
  await a.flush();
  assert.equal(sent(), afterWrite, 'no FLUSH: the acknowledged write is already durable there');
  // What the peer acknowledged is in its data file already (no fdatasync was asked of it).
  assert.ok(readFileSync(b.file).subarray(0, data.length).equals(data));
  assert.equal(digest(aFile), digest(b.file));
});

test('volume adjust: a new resync cap paces a resync that is already running', async (t) => {
  const MiB = 1024 * 1024;
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-rate-'));
  const b = await makeReplica(dir, 'b');
  const { a, aFile } = await makePrimaryWithPeer(t, dir, b, 'off');
  assert.deepEqual(await a.promote(1), { ok: true });
  await until(() => a.status().peers[0]!.connection === 'Connected');
  await b.server.close();
  await until(() => a.status().peers[0]!.connection !== 'Connected');
  for (let i = 0; i < 16; i++) await a.write(i * MiB, randomBytes(MiB));
  // 256 KiB/s: the 16 MiB would take over a minute.
  a.adjust({ quorum: 'off', afterSplitBrain: 'disconnect', resyncRate: 256 * 1024 });
  b.server = (await b.start(b.port)).server;
  await until(() => (a.status().peers[0]!.resync?.doneBytes ?? 0) > 0);
  await new Promise((r) => setTimeout(r, 1000));
  const capped = a.status().peers[0]!.resync?.doneBytes ?? 0;
  assert.ok(capped < 8 * MiB, `capped at 256 KiB/s, yet ${capped} bytes resynced in about a second`);
  a.adjust({ quorum: 'off', afterSplitBrain: 'disconnect', resyncRate: 0 });
  await until(() => {
    const p = a.status().peers[0]!;
    return p.connection === 'Connected' && p.outOfSyncBytes === 0 && !p.resync;
  }, 30_000);
  assert.equal(digest(aFile), digest(b.file));
});

test('a handshake that decides none sends nothing; bits marked before a promotion are resent, and the log says why', async (t) => {
  const MiB = 1024 * 1024;
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-rs15-none-'));
  const b = await makeReplica(dir, 'b');
  const aFile = join(dir, 'a.data');
  writeFileSync(aFile, Buffer.alloc(SIZE));
  const stateDir = join(dir, 'a-state');
  const records: Array<{ msg: string } & Record<string, unknown>> = [];
  const log = { info: (o: object, msg: string) => records.push({ ...o, msg }), warn: () => undefined };
  const open = async () =>
    new ReplicatedDevice(
      await LocalDevice.open(aFile, SIZE),
      new MemoryReplicaStore(initial),
      {
        node: 'a',
        volumeUuid,
        secret,
        peers: [{ node: 'b', host: '127.0.0.1', port: b.port }],
        quorum: 'off',
        afterSplitBrain: 'disconnect',
        stateDir,
      },
      log,
    );
  let a = await open();
  t.after(async () => {
    await a.close().catch(() => undefined);
    await b.server.close();
    await b.device.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const decisions = () => records.filter((r) => r.msg === 'peer handshake decision' && r.peer === 'b');

  // Same generation, nothing marked: `none`, and nothing travels but the handshake.
  assert.deepEqual(await a.promote(1), { ok: true });
  await until(() => a.status().peers[0]!.connection === 'Connected');
  await new Promise((r) => setTimeout(r, 300));
  const clean = a.status().peers[0]!;
  assert.equal(decisions().at(-1)?.decision, 'none');
  assert.equal(decisions().at(-1)?.resyncBytes, undefined);
  assert.equal(clean.lastResync, undefined);
  assert.ok(clean.bytesSent < 4096, `${clean.bytesSent} bytes sent after a none handshake`);
  assert.equal(clean.diskState, 'UpToDate');
  assert.equal(clean.diskStateSource, 'handshake');
  await a.close();

  // The same node with 3 MiB still marked for b from an earlier time as primary (what a crash as
  // primary leaves: its activity-log extents): still `none`, but those bytes are resent, and the
  // handshake's log line says how many and why.
  const bitmap = new DirtyBitmap(SIZE);
  bitmap.markRange(4 * MiB, 3 * MiB);
  await saveBitmapAsync(join(stateDir, 'bitmap-b'), bitmap);
  a = await open();
  assert.deepEqual(await a.promote(2), { ok: true });
  await until(() => {
    const p = a.status().peers[0]!;
    return p.connection === 'Connected' && p.lastResync !== undefined;
  });
  const d = decisions().at(-1)!;
  assert.equal(d.decision, 'none');
  assert.equal(d.resyncBytes, 3 * MiB);
  assert.match(
    String(d.resyncReason),
    /same generation, but 3145728 bytes .*all of it marked before this promotion/,
  );
  assert.equal(a.status().peers[0]!.lastResync!.bytes, 3 * MiB);
  await until(() => a.status().peers[0]!.diskState === 'UpToDate');
  assert.equal(a.status().peers[0]!.diskStateSource, 'state-reply');
});

test('two replicas and a tiebreaker: the replica that was away while the primary acknowledged with the tiebreaker is not promoted after the primary is gone', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-repl-witness-'));
  const b = await makeReplica(dir, 'b');
  const tbStore = new MemoryReplicaStore({ ...initial, diskState: 'Diskless' });
  const tb = new ReplicaServer({
    node: 'tb',
    volumeUuid,
    secret,
    host: '127.0.0.1',
    port: 0,
    size: SIZE,
    store: tbStore,
    log: quiet,
  });
  const tbPort = await tb.listen();
  const aFile = join(dir, 'a.data');
  writeFileSync(aFile, Buffer.alloc(SIZE));
  const tbPeer = { node: 'tb', host: '127.0.0.1', port: tbPort, tiebreaker: true };
  const a = newDevice(
    dir,
    'a',
    await LocalDevice.open(aFile, SIZE),
    [{ node: 'b', host: '127.0.0.1', port: b.port }, tbPeer],
    'suspend-io',
  );
  let bDevice: ReplicatedDevice | undefined;
  t.after(async () => {
    await a.close().catch(() => undefined);
    await bDevice?.close().catch(() => undefined);
    await b.server.close().catch(() => undefined);
    await tb.close();
    await b.device.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  assert.equal((await a.promote(1)).ok, true);
  await a.write(0, randomBytes(64 * 1024));
  await a.flush();
  // b goes away; a goes on with the tiebreaker's vote: its new generation is witnessed there first.
  await b.server.close();
  const acked = randomBytes(64 * 1024);
  await a.write(1024 * 1024, acked);
  await a.flush();
  const named = a.status().generation.current;
  assert.equal(
    tbStore.load().witnessed?.current,
    named,
    'the tiebreaker witnessed the generation acknowledged in',
  );
  await a.close(); // the primary is gone (its lease ended; here a clean stop, the case is the same)

  // b is back, its own disk UpToDate on the old generation: the manager would promote it.
  const back = await b.start(0);
  b.server = back.server;
  bDevice = newDevice(
    dir,
    'b',
    b.device,
    [{ node: 'a', host: '127.0.0.1', port: 1 }, tbPeer],
    'suspend-io',
    b.store,
  );
  assert.equal(b.store.load().diskState, 'UpToDate');
  const r = await bDevice.promote(2, 3000, false, ['a']);
  assert.equal(r.ok, false, 'b promoted over the write it missed');
  if (!r.ok) assert.match(r.reason, /peer tb witnessed newer data of a primary/);
  assert.equal(bDevice.status().role, 'Secondary');
});
