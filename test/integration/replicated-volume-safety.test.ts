/**
 * Replicated volumes, safety through the real CLI and daemons: a forced split-brain is detected,
 * stays apart, and is resolved by the operator with the loser's blocks saved; hostile bytes on a
 * running replica's port change nothing and do not disturb the primary feeding it.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { crc32 } from 'node:zlib';
import {
  clientProof,
  HANDSHAKE_KEY,
  NONCE_LENGTH,
  proofMatches,
  serverProof,
  sessionKeys,
  type Transcript,
} from '../../src/volume/replication/auth.ts';
import {
  encodeFrame,
  FRAME_MAGIC,
  FrameDecoder,
  MAX_PAYLOAD,
  PROTOCOL_VERSION,
} from '../../src/volume/replication/frame.ts';
import {
  decodeMessage,
  encodeMessage,
  type Message,
  MessageType,
  type PeerState,
} from '../../src/volume/replication/protocol.ts';
import { decodeSavedBlocks, encodeSavedBlock } from '../../src/volume/replication/saved-blocks.ts';
import { readSecret } from '../../src/volume/replication-config.ts';
import { writeDurably } from '../helpers/files.ts';
import { ReplicaCluster } from '../helpers/replica-cluster.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const fileSha = (f: string) => sha(readFileSync(f));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The records of a split-brain save file: offset (u64 BE), length (u32 BE), data. */
function readSaved(file: string): Array<{ offset: number; data: Buffer }> {
  const buf = readFileSync(file);
  const out = decodeSavedBlocks(buf);
  const whole = out.reduce((n, r) => n + encodeSavedBlock(r.offset, r.data).length, 0);
  assert.equal(whole, buf.length, `${file} ends with a truncated record`);
  return out;
}

/**
 * Two replicas with quorum off made to diverge through the CLI: a wrote X while b was away, then b,
 * alone and with a higher epoch, wrote Y. Returns with b primary (its filesystem unmounted when
 * `quietSurvivor`), a up as secondary, and b reporting the split-brain.
 */
async function makeSplitBrain(t: TestContext, quietSurvivor: boolean) {
  const cl = new ReplicaCluster({ replicas: 2, quorum: 'off', size: '64M' });
  t.after(() => cl.cleanup());
  cl.setup();
  const mntA = cl.node('a').mnt;
  const mntB = cl.node('b').mnt;
  const size = cl.status('a').size as number;

  // A common history: both replicas hold `base`.
  const base = randomBytes(128 * 1024);
  cl.ok('a', ['volume', 'primary', cl.volume, '--mkfs', 'ext4', '--mount', mntA]);
  writeDurably(join(mntA, 'base'), base);
  cl.ok('a', ['volume', 'secondary', cl.volume]);

  // a writes X while b is away.
  cl.ok('b', ['volume', 'down', cl.volume]);
  const x = randomBytes(256 * 1024);
  cl.ok('a', ['volume', 'primary', cl.volume, '--mount', mntA]);
  writeDurably(join(mntA, 'x'), x);
  cl.ok('a', ['volume', 'secondary', cl.volume]);
  cl.ok('a', ['volume', 'down', cl.volume]);
  const aData = join(cl.volumeDir('a'), 'data');
  const aAfterX = fileSha(aData);

  // b, alone (quorum off), becomes primary with a higher epoch and writes Y: the histories diverge.
  cl.ok('b', ['volume', 'up', cl.volume]);
  cl.ok('b', ['volume', 'primary', cl.volume, '--epoch', '10', '--mount', mntB]);
  assert.equal(sha(readFileSync(join(mntB, 'base'))), sha(base));
  assert.ok(!existsSync(join(mntB, 'x')), 'b sees x, which only a wrote');
  const y = randomBytes(256 * 1024);
  writeDurably(join(mntB, 'y'), y);
  // b stays primary; without its filesystem mounted, nothing writes to the device meanwhile.
  if (quietSurvivor) assert.equal(spawnSync('umount', [mntB]).status, 0, `umount ${mntB}`);

  // a comes back: b (primary) meets it, finds the split-brain and keeps the sides apart.
  cl.ok('a', ['volume', 'up', cl.volume]);
  await cl.until('b to report the split-brain with a', () => cl.peer('b', 'a').connection === 'SplitBrain');
  const sb = cl.peer('b', 'a');
  assert.match(sb.lastError, /split-brain/i);
  console.log(`b reports: ${sb.connection} (${sb.lastError})`);
  const human = cl.ok('b', ['volume', 'status', cl.volume]);
  assert.match(human, /peer a .*SplitBrain/, human);

  // Nothing merges: after a while, still apart, and a's data file is exactly what a wrote.
  await sleep(1500);
  assert.equal(cl.peer('b', 'a').connection, 'SplitBrain');
  const aImage = readFileSync(aData);
  assert.equal(sha(aImage), aAfterX, "a's data changed during the split-brain");
  assert.equal(cl.status('a').daemon.replication.server.writesApplied, 0);

  return { cl, mntA, mntB, size, base, x, y, aData, aImage };
}

test('forced split-brain through the CLI: detected, kept apart, resolved with the loser blocks saved', async (t) => {
  const { cl, mntA, size, base, x, y, aImage } = await makeSplitBrain(t, true);

  // The operator keeps b: a's diverging blocks are saved on b, then overwritten.
  const r = JSON.parse(cl.ok('b', ['volume', 'resolve-split-brain', cl.volume, '--peer', 'a', '--json'])) as {
    savedTo: string;
    bytesSaved: number;
  };
  console.log(`resolve-split-brain: ${r.bytesSaved} bytes saved to ${r.savedTo}`);
  assert.ok(r.bytesSaved > 0);
  assert.ok(existsSync(r.savedTo), `${r.savedTo} missing`);
  const records = readSaved(r.savedTo);
  assert.ok(records.length > 0);
  assert.equal(
    records.reduce((n, rec) => n + rec.data.length, 0),
    r.bytesSaved,
  );
  for (const rec of records)
    assert.ok(rec.offset + rec.data.length <= size, `record at ${rec.offset} past the end`);
  // Each record is a's block as it was, and X (written only on a) is among them, 1 KiB block by block
  // (ext4's block size on a volume this small).
  for (const rec of records)
    assert.ok(
      aImage.subarray(rec.offset, rec.offset + rec.data.length).equals(rec.data),
      `record at ${rec.offset}`,
    );
  for (let i = 0; i < x.length; i += 1024) {
    const block = x.subarray(i, i + 1024);
    assert.ok(
      records.some((rec) => rec.data.includes(block)),
      `block ${i / 1024} of x is not in the saved file`,
    );
  }

  await cl.until(
    'a to be resynced from b',
    () => {
      const p = cl.peer('b', 'a');
      return p.connection === 'Connected' && p.outOfSyncBytes === 0 && !p.resync;
    },
    30_000,
  );
  const v = cl.run('b', ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v.status, 0, v.stderr);
  for (const res of JSON.parse(v.stdout)) assert.deepEqual(res.mismatches, [], `replica ${res.peer} differs`);

  // The loser, promoted later, serves the survivor's data.
  cl.ok('b', ['volume', 'secondary', cl.volume]);
  cl.ok('a', ['volume', 'primary', cl.volume, '--mount', mntA]);
  assert.equal(sha(readFileSync(join(mntA, 'y'))), sha(y));
  assert.equal(sha(readFileSync(join(mntA, 'base'))), sha(base));
  assert.ok(!existsSync(join(mntA, 'x')), 'a still has x after losing the split-brain');
});

test('resolve-split-brain saves the loser blocks as they were, also while the survivor writes', async (t) => {
  const { cl, mntB, aImage } = await makeSplitBrain(t, false);
  const writer = startWriter(mntB);
  try {
    await sleep(500);
    const r = JSON.parse(
      cl.ok('b', ['volume', 'resolve-split-brain', cl.volume, '--peer', 'a', '--json']),
    ) as {
      savedTo: string;
    };
    const changed = readSaved(r.savedTo)
      .filter((rec) => !aImage.subarray(rec.offset, rec.offset + rec.data.length).equals(rec.data))
      .map((rec) => rec.offset);
    assert.deepEqual(changed, [], "saved records that are not a's blocks (b's writes reached a first)");
  } finally {
    await stopWriter(writer);
  }
});

/**
 * A hand-made replication client, so that a test can send anything: the real frame, auth and
 * protocol codecs, driven one frame at a time. It speaks as node `node` to the server at `port`.
 */
class RawClient {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  /** Every byte this client sent, in order (to replay a recorded handshake). */
  readonly sent: Buffer[] = [];
  #decoder = new FrameDecoder(HANDSHAKE_KEY);
  #inbox: Message[] = [];
  #waiter: (() => void) | undefined;
  #closedFlag = false;
  /** After `handshake`: the client→server session key and the next sequence number. */
  key: Buffer | undefined;
  seq = 0;

  private constructor(socket: Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.#closedFlag = true;
        this.#waiter?.();
        resolve();
      }),
    );
    socket.on('error', (err) => {
      this.socketError = err.message;
    });
    socket.on('data', (chunk: Buffer) => {
      for (const r of this.#decoder.push(chunk)) {
        if (!r.ok) return;
        const d = decodeMessage(r.frame.type, r.frame.payload);
        if (d.ok) this.#inbox.push(d.message);
      }
      this.#waiter?.();
    });
  }

  static async open(port: number): Promise<RawClient> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawClient(socket);
  }

  get isClosed(): boolean {
    return this.#closedFlag;
  }

  write(bytes: Buffer): void {
    this.sent.push(bytes);
    this.socket.write(bytes);
  }

  /** A handshake frame (public MAC key) carrying `m`. */
  sendHandshake(m: Message, seq: number): void {
    const { type, payload } = encodeMessage(m);
    this.write(encodeFrame(HANDSHAKE_KEY, { type, seq, epoch: 0, payload }));
  }

  /** One authenticated frame: type and payload as given, the session key, the next sequence number. */
  frame(type: number, payload: Buffer, epoch = 0, o: { key?: Buffer; seq?: number } = {}): Buffer {
    assert.ok(this.key, 'not authenticated');
    const seq = o.seq ?? this.seq++;
    return encodeFrame(o.key ?? this.key, { type, seq, epoch, payload });
  }

  send(m: Message, epoch = 0): void {
    const { type, payload } = encodeMessage(m);
    this.write(this.frame(type, payload, epoch));
  }

  /** The next message of type `type` from the server (fails after `ms`, or when the server closes). */
  async next(type: Message['type'], ms = 5000): Promise<Message> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.#inbox.findIndex((m) => m.type === type);
      if (i >= 0) return this.#inbox.splice(i, 1)[0]!;
      if (this.#closedFlag) assert.fail(`server closed the connection before sending ${type}`);
      if (Date.now() > deadline) assert.fail(`no ${type} from the server within ${ms} ms`);
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  /**
   * HELLO, CHALLENGE (the server's proof checked), AUTH. With `secret` wrong, the AUTH proof is a
   * forgery. Afterwards frames continue the sequence under the session key, the server's under its own.
   */
  async handshake(o: { node: string; volume: string; secret: Buffer }): Promise<void> {
    const nonce = randomBytes(NONCE_LENGTH);
    this.sendHandshake({ type: 'hello', node: o.node, volume: o.volume, nonce }, 0);
    const ch = await this.next('challenge');
    assert.equal(ch.type, 'challenge');
    const t: Transcript = {
      clientNode: o.node,
      serverNode: ch.node,
      volumeUuid: o.volume,
      clientNonce: nonce,
      serverNonce: ch.nonce,
    };
    this.sendHandshake({ type: 'auth', proof: clientProof(o.secret, t) }, 1);
    const keys = sessionKeys(o.secret, t);
    this.key = keys.clientToServer;
    this.seq = 2;
    // Frames from the server now carry its session key, continuing after its CHALLENGE.
    this.#decoder = new FrameDecoder(keys.serverToClient);
    this.#decoder.expectSeq(1);
    this.serverProofOk = proofMatches(serverProof(o.secret, t), ch.proof);
  }

  serverProofOk = false;
  /** The socket error that ended the connection, if any (ECONNRESET: the server reset it). */
  socketError: string | undefined;

  /** The messages received and not yet taken by `next`. */
  received(): Message[] {
    return [...this.#inbox];
  }

  /** Waits until the server closes this connection; false if it is still open after `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    return Promise.race([this.closed.then(() => true), sleep(ms).then(() => false)]);
  }

  end(): void {
    this.socket.destroy();
  }
}

function peerState(node: string, role: 'Primary' | 'Secondary', epoch: number, size: number): PeerState {
  return {
    node,
    role,
    diskState: 'UpToDate',
    generation: { current: 'abad1dea', bitmap: '0', history: [] },
    crashedPrimary: false,
    epoch,
    size,
    changedBlocks: 0,
    promotedAt: 0,
  };
}

/** A header that announces `length` bytes of payload, with a correct header CRC. */
function headerAnnouncing(length: number, type: number = MessageType.hello): Buffer {
  const h = Buffer.alloc(32);
  h.writeUInt32BE(FRAME_MAGIC, 0);
  h.writeUInt8(PROTOCOL_VERSION, 4);
  h.writeUInt8(type, 5);
  h.writeUInt32BE(length, 8);
  h.writeUInt32BE(crc32(h.subarray(0, 28)), 28);
  return h;
}

interface Target {
  port: number;
  volume: string;
  secret: Buffer;
  size: number;
}

/**
 * Sends every kind of hostile input to the replica server at `target.port`, each on its own
 * connection, and checks that the server closes each of them. Returns how many of them must count
 * in `closedForBadInput`.
 */
async function hostileRound(target: Target, log: (msg: string) => void): Promise<number> {
  const { port, volume, secret, size } = target;
  let bad = 0;
  /** Sends `bytes` on a fresh connection (left open) and expects the server to close it. */
  const expectClose = async (what: string, bytes: Buffer, ms = 3000) => {
    const c = await RawClient.open(port);
    c.write(bytes);
    assert.ok(await c.closedWithin(ms), `${what}: the server did not close the connection within ${ms} ms`);
    bad++;
    log(what);
  };
  const hello = (node = 'evil', vol = volume) =>
    encodeFrame(HANDSHAKE_KEY, {
      type: MessageType.hello,
      seq: 0,
      epoch: 0,
      payload: encodeMessage({ type: 'hello', node, volume: vol, nonce: randomBytes(NONCE_LENGTH) }).payload,
    });

  // A slow client that sends half a header and waits: the handshake timeout must close it.
  const slow = await RawClient.open(port);
  slow.write(hello().subarray(0, 10));
  const slowClosed = slow.closedWithin(9000);

  await expectClose('random bytes', randomBytes(5000));
  await expectClose('a header announcing 2 GiB', headerAnnouncing(0x7fffffff));
  await expectClose('a header announcing MAX_PAYLOAD + 1', headerAnnouncing(MAX_PAYLOAD + 1));
  const badCrc = hello();
  badCrc.writeUInt32BE((badCrc.readUInt32BE(28) ^ 1) >>> 0, 28);
  await expectClose('a header with a wrong CRC', badCrc);
  const badMac = hello();
  badMac[badMac.length - 1]! ^= 0xff;
  await expectClose('a HELLO with a wrong MAC', badMac);
  const badPayload = hello();
  badPayload[40]! ^= 0x01;
  await expectClose('a HELLO with a flipped payload bit', badPayload);
  await expectClose('a HELLO for another volume', hello('evil', '00000000-0000-4000-8000-000000000000'));
  await expectClose(
    'a frame of an unknown type',
    encodeFrame(HANDSHAKE_KEY, { type: 99, seq: 0, epoch: 0, payload: Buffer.alloc(8) }),
  );
  {
    // A truncated header, then the client hangs up.
    const c = await RawClient.open(port);
    c.write(hello().subarray(0, 10));
    await sleep(100);
    c.end();
    bad++;
    log('a truncated header, then hang up');
  }
  {
    // A forged AUTH: the proof made with a wrong secret.
    const c = await RawClient.open(port);
    await c.handshake({ node: 'evil', volume, secret: Buffer.from('not-the-cluster-secret') });
    assert.equal(c.serverProofOk, false, 'the server proved knowledge of a secret it does not have');
    assert.ok(await c.closedWithin(3000), 'forged AUTH: the connection stayed open');
    bad++;
    log('a forged AUTH');
  }
  {
    // A genuine handshake, recorded and replayed on a new connection: the server's nonce differs.
    const genuine = await RawClient.open(port);
    await genuine.handshake({ node: 'evil', volume, secret });
    assert.ok(genuine.serverProofOk);
    genuine.send({ type: 'ping' });
    await genuine.next('pong');
    const recorded = Buffer.concat(genuine.sent);
    genuine.end();
    await expectClose('a replayed handshake (and frame)', recorded);
  }
  // Authenticated connections that then misbehave.
  const authed = async (what: string, act: (c: RawClient) => void) => {
    const c = await RawClient.open(port);
    await c.handshake({ node: 'evil', volume, secret });
    c.send({ type: 'state', state: peerState('evil', 'Secondary', 0, size) });
    await c.next('state');
    act(c);
    assert.ok(await c.closedWithin(3000), `${what}: the server did not close the connection`);
    bad++;
    log(what);
  };
  await authed('garbage after a valid handshake', (c) => c.write(randomBytes(4096)));
  await authed('a frame with a wrong MAC (forged key)', (c) =>
    c.write(c.frame(MessageType.flush, Buffer.alloc(4), 0, { key: randomBytes(32) })),
  );
  await authed('a replayed frame (same sequence number)', (c) => {
    const ping = c.frame(MessageType.ping, Buffer.alloc(0));
    c.write(ping);
    c.write(ping);
  });
  await authed('a frame out of sequence', (c) =>
    c.write(c.frame(MessageType.ping, Buffer.alloc(0), 0, { seq: 1000 })),
  );
  await authed('an authenticated header announcing 2 GiB', (c) =>
    c.write(headerAnnouncing(0x7fffffff, MessageType.write)),
  );
  await authed('a write with a short payload', (c) => c.write(c.frame(MessageType.write, Buffer.alloc(5))));
  await authed('an unknown message type', (c) => c.write(c.frame(77, Buffer.alloc(16))));
  await authed('a STATE naming another node', (c) =>
    c.send({ type: 'state', state: peerState('someone-else', 'Secondary', 0, size) }),
  );
  await authed('a HELLO after the handshake', (c) =>
    c.send({ type: 'hello', node: 'evil', volume, nonce: randomBytes(NONCE_LENGTH) }),
  );

  assert.ok(await slowClosed, 'half a header held open: the server never closed the connection');
  bad++;
  log('half a header held open (closed by the handshake timeout)');
  return bad;
}

/** A stand-in application on the primary: rewrites four 1 MiB files with fsync, until stopped. */
function startWriter(dir: string): ChildProcess {
  const script =
    'i=0; while :; do dd if=/dev/urandom of="$1/w$((i % 4))" bs=64k count=16 conv=fsync status=none || exit 1; i=$((i+1)); done';
  return spawn('sh', ['-c', script, 'writer', dir], { detached: true, stdio: 'ignore' });
}

async function stopWriter(w: ChildProcess): Promise<void> {
  if (w.exitCode !== null || w.signalCode !== null || w.pid === undefined) return;
  const exited = new Promise((r) => w.once('exit', r));
  process.kill(-w.pid, 'SIGKILL'); // its own process group: the shell and its dd
  await exited;
}

function linkDowns(cl: ReplicaCluster, node: string, peer: string): number {
  const log = readFileSync(join(cl.volumeDir(node), 'run', 'daemon.log'), 'utf8');
  return log.split('\n').filter((l) => l.includes('peer link down') && l.includes(`"peer":"${peer}"`)).length;
}

test('hostile input on a running replica port: closed and counted, daemon up, data unchanged, primary undisturbed', async (t) => {
  const cl = new ReplicaCluster({ replicas: 2, size: '64M' });
  t.after(() => cl.cleanup());
  cl.setup();
  const st = cl.status('b');
  const target: Target = {
    port: cl.node('b').port,
    volume: st.uuid as string,
    secret: readSecret(cl.secretFile),
    size: st.size as number,
  };
  const bPid = cl.daemonPid('b');
  const bData = join(cl.volumeDir('b'), 'data');
  const server = () =>
    cl.status('b').daemon.replication.server as {
      connections: Array<{ peer: string; bytesReceived: number }>;
      writesApplied: number;
      refused: number;
      closedForBadInput: number;
    };
  const alive = (pid: number) => {
    process.kill(pid, 0);
    return true;
  };
  const log = (what: string) => console.log(`  closed: ${what}`);

  // 1. b is a secondary with no primary: nothing may reach its disk.
  const before = fileSha(bData);
  const bad1 = await hostileRound(target, log);
  await cl.until(`b to count ${bad1} bad connections`, () => server().closedForBadInput === bad1, 10_000);
  assert.ok(alive(bPid));
  assert.equal(cl.daemonPid('b'), bPid);
  assert.equal(server().writesApplied, 0);
  assert.equal(fileSha(bData), before, "b's data changed");

  // 2. The same while a is primary and writing through b.
  const mntA = cl.node('a').mnt;
  cl.ok('a', ['volume', 'primary', cl.volume, '--mkfs', 'ext4', '--mount', mntA]);
  const writes = () => cl.status('a').daemon.counters.writes as number;
  const writer = startWriter(mntA);
  try {
    const w0 = writes();
    await cl.until('the writer to write', () => writes() > w0 + 20);
    const downs = linkDowns(cl, 'a', 'b');
    const received0 = server().connections.find((c) => c.peer === 'a')?.bytesReceived ?? 0;
    assert.ok(received0 > 0, 'a is not connected to b');
    const refused0 = server().refused;

    // b is attacked, and a too: the primary's own replica server listens all along.
    const aPid = cl.daemonPid('a');
    const [bad2, badA] = await Promise.all([
      hostileRound(target, log),
      hostileRound({ ...target, port: cl.node('a').port }, () => undefined),
    ]);
    {
      // Authenticated, but with an epoch older than b's: the write is refused, the STATE too.
      const c = await RawClient.open(target.port);
      await c.handshake({ node: 'evil', volume: target.volume, secret: target.secret });
      c.send({ type: 'state', state: peerState('evil', 'Secondary', 0, target.size) });
      const s = await c.next('state');
      assert.ok(s.type === 'state' && s.state.epoch >= 1, 'b does not know the primary epoch');
      const old = s.state.epoch - 1;
      c.send({ type: 'write', id: 7, offset: 0, data: Buffer.alloc(4096, 0xee), resync: false }, old);
      const ack = await c.next('ack');
      assert.deepEqual(ack, { type: 'ack', id: 7, status: 2 }, 'an old-epoch write was not refused as stale');
      c.send({ type: 'state', state: peerState('evil', 'Primary', old, target.size) }, old);
      assert.ok(await c.closedWithin(3000), 'an old-epoch primary STATE: the connection stayed open');
      // b told the stale primary its epoch (STATE, then ERROR) before closing: that is how an old
      // primary learns that it is fenced (docs/replication.md).
      const got = c.received();
      assert.ok(
        got.some((m) => m.type === 'state') &&
          got.some((m) => m.type === 'error' && /stale epoch/.test(m.message)),
        `received only ${JSON.stringify(got.map((m) => m.type))}, socket error: ${c.socketError}`,
      );
      log('an old-epoch write (refused) and an old-epoch primary STATE');
    }
    const w1 = writes();
    await cl.until('the writer to keep writing', () => writes() > w1 + 20);
    await cl.until(
      `b to count ${bad1 + bad2} bad connections`,
      () => server().closedForBadInput === bad1 + bad2,
      10_000,
    );
    await cl.until(
      `a to count ${badA} bad connections`,
      () => cl.status('a').daemon.replication.server.closedForBadInput === badA,
      10_000,
    );
    assert.ok(alive(aPid));
    assert.equal(cl.daemonPid('a'), aPid);
    const srv = server();
    assert.ok(srv.refused >= refused0 + 2, `refused ${srv.refused - refused0}, expected at least 2`);
    const fromA = srv.connections.filter((c) => c.peer === 'a');
    assert.equal(fromA.length, 1, JSON.stringify(srv.connections));
    assert.ok(fromA[0]!.bytesReceived > received0, "a's connection to b did not carry on");
    assert.equal(linkDowns(cl, 'a', 'b'), downs, "a's link to b went down during the attack");
    const peerB = cl.peer('a', 'b');
    assert.equal(peerB.connection, 'Connected');
    assert.equal(peerB.outOfSyncBytes, 0);
    assert.ok(alive(bPid));
    assert.equal(cl.daemonPid('b'), bPid);
  } finally {
    await stopWriter(writer);
  }
  // With quorum on, b cannot become a second primary.
  const second = cl.run('b', ['volume', 'primary', cl.volume]);
  assert.notEqual(second.status, 0, 'b became primary while a is primary');
  assert.equal(cl.status('b').daemon.replication.role, 'Secondary');
  const v = cl.run('a', ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v.status, 0, v.stderr);
  for (const res of JSON.parse(v.stdout)) assert.deepEqual(res.mismatches, [], `replica ${res.peer} differs`);
});

test('quorum off: a replica cannot become primary while its peer is primary', async (t) => {
  const cl = new ReplicaCluster({ replicas: 2, quorum: 'off', size: '32M' });
  t.after(() => cl.cleanup());
  cl.setup();
  cl.ok('a', ['volume', 'primary', cl.volume]);
  const r = cl.run('b', ['volume', 'primary', cl.volume]);
  const roles = ['a', 'b'].map((n) => `${n}: ${cl.status(n).daemon.replication.role}`).join(', ');
  assert.notEqual(r.status, 0, `b was promoted while a is primary (${roles})`);
});

test('split-brain: the operator keeps the side that is not primary (secondary, primary --force, resolve)', async (t) => {
  const { cl, mntA, mntB, base, x } = await makeSplitBrain(t, false);
  cl.ok('b', ['volume', 'secondary', cl.volume]);
  // Without --force, a reachable peer with diverged data forbids the promotion.
  const refused = cl.run('a', ['volume', 'primary', cl.volume, '--epoch', '20']);
  assert.notEqual(refused.status, 0, 'a became primary over a diverged peer without --force');
  assert.match(refused.stderr, /diverged|split-brain/);
  cl.ok('a', ['volume', 'primary', cl.volume, '--epoch', '20', '--force', '--mount', mntA]);
  const r = JSON.parse(cl.ok('a', ['volume', 'resolve-split-brain', cl.volume, '--peer', 'b', '--json'])) as {
    savedTo: string;
    bytesSaved: number;
  };
  assert.ok(r.bytesSaved > 0 && existsSync(r.savedTo), `nothing saved: ${JSON.stringify(r)}`);
  await cl.until('b resynced from a', () => {
    const p = cl.peer('a', 'b');
    return p.connection === 'Connected' && p.outOfSyncBytes === 0 && !p.resync;
  });
  const v = cl.run('a', ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v.status, 0, v.stderr);
  for (const res of JSON.parse(v.stdout)) assert.deepEqual(res.mismatches, [], `replica ${res.peer} differs`);
  // b now holds a's history: base and x, not y.
  cl.ok('a', ['volume', 'secondary', cl.volume]);
  cl.ok('b', ['volume', 'primary', cl.volume, '--mount', mntB]);
  assert.equal(sha(readFileSync(join(mntB, 'base'))), sha(base));
  assert.equal(sha(readFileSync(join(mntB, 'x'))), sha(x));
  assert.ok(!existsSync(join(mntB, 'y')), 'b still has y after losing the split-brain');
});
