/**
 * Replication across a rolling upgrade: daemons that speak different protocol versions negotiate the
 * highest common one and keep replicating; daemons with no common version refuse with a reason.
 * "Old" daemons are this build pinned to version 2 (CVSERVER_REPLICATION_MAX_VERSION=2), which sends
 * what a version 2 daemon sends. Ports 17600-17699.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { HANDSHAKE_KEY, serverProof, type Transcript } from '../../src/volume/replication/auth.ts';
import { clientHandshake, HandshakeRefused } from '../../src/volume/replication/connection.ts';
import { encodeFrame, FrameDecoder, PROTOCOL_VERSION } from '../../src/volume/replication/frame.ts';
import { decodeMessage, encodeMessage, type Message } from '../../src/volume/replication/protocol.ts';
import { ReplicaServer } from '../../src/volume/replication/replica-server.ts';
import { MemoryReplicaStore } from '../../src/volume/replication/replica-store.ts';
import type { VersionRange } from '../../src/volume/replication/version.ts';
import { type PeerStatus, ReplicaCluster } from '../helpers/replica-cluster.ts';

const secret = Buffer.from('upgrade-test-secret');
const volumeUuid = '6f0f5c1e-0000-4000-8000-0000000000aa';
const quiet = { info: () => undefined, warn: () => undefined };

/** A diskless replica server (it answers the handshake and STATE) speaking `versions`. */
async function server(t: test.TestContext, port: number, versions: VersionRange): Promise<ReplicaServer> {
  const s = new ReplicaServer({
    node: 's',
    volumeUuid,
    secret,
    host: '127.0.0.1',
    port,
    size: 1024 * 1024,
    store: new MemoryReplicaStore({
      generation: { current: 'a1', bitmap: '0', history: [] },
      diskState: 'UpToDate',
      epoch: 0,
      primaryOpen: false,
    }),
    versions,
    log: quiet,
  });
  await s.listen();
  t.after(() => s.close());
  return s;
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });
}

const state = (node: string): Extract<Message, { type: 'state' }>['state'] => ({
  node,
  role: 'Primary',
  diskState: 'UpToDate',
  generation: { current: 'a1', bitmap: '0', history: [] },
  crashedPrimary: false,
  epoch: 0,
  size: 1024 * 1024,
  changedBlocks: 0,
  promotedAt: 0,
});

test('handshake: the highest common version; a client of before the negotiation; no common version refused with a reason', async (t) => {
  // A client pinned to 2 against a server that speaks 2-3: version 2 frames both ways.
  const s = await server(t, 17610, { min: 2, max: 3 });
  const c = await clientHandshake(await dial(17610), {
    node: 'c',
    volumeUuid,
    secret,
    versions: { min: 2, max: 2 },
  });
  t.after(() => c.close('test over'));
  assert.equal(c.version, 2);
  const answer = new Promise<Message>((resolve) => c.onMessage((m) => resolve(m)));
  c.send({ type: 'state', state: { ...state('c'), sent: 'update' } });
  // The client's decoder takes version 2 frames only: the answer proves the server speaks 2 to it.
  assert.equal((await answer).type, 'state');
  assert.deepEqual(
    s.status().connections.map((x) => [x.peer, x.version]),
    [['c', 2]],
  );

  // A daemon of before the negotiation: HELLO at frame version 3 without `versions`. The server
  // answers in version 3, without the `version` field it would refuse, with proofs as before.
  const raw = await dial(17610);
  t.after(() => raw.destroy());
  const nonce = Buffer.alloc(32, 5);
  const hello = encodeMessage({ type: 'hello', node: 'old', volume: volumeUuid, nonce });
  raw.write(
    encodeFrame(HANDSHAKE_KEY, { version: 3, type: hello.type, seq: 0, epoch: 0, payload: hello.payload }),
  );
  // Accepts version 3 only, as the old daemon did.
  const decoder = new FrameDecoder(HANDSHAKE_KEY, undefined, undefined, undefined, { min: 3, max: 3 });
  const reply = await new Promise<ReturnType<FrameDecoder['push']>[number]>((resolve) =>
    raw.on('data', (chunk: Buffer) => {
      const [r] = decoder.push(chunk);
      if (r) resolve(r);
    }),
  );
  assert.ok(reply.ok, 'the old client could not decode the answer');
  assert.equal(reply.frame.version, 3);
  assert.ok(!reply.frame.payload.toString().includes('"version"'));
  const ch = decodeMessage(reply.frame.type, reply.frame.payload);
  assert.ok(ch.ok && ch.message.type === 'challenge');
  const tr: Transcript = {
    clientNode: 'old',
    serverNode: 's',
    volumeUuid,
    clientNonce: nonce,
    serverNonce: ch.message.nonce,
  };
  assert.deepEqual(ch.message.proof, serverProof(secret, tr), 'proofs as before the negotiation');

  // No common version: the client is told why; the server logs it and shows it in its status.
  const s3 = await server(t, 17611, { min: 3, max: 3 });
  await assert.rejects(
    clientHandshake(await dial(17611), { node: 'c', volumeUuid, secret, versions: { min: 2, max: 2 } }),
    (err: Error) => {
      assert.ok(err instanceof HandshakeRefused, err.message);
      assert.match(
        err.message,
        /^refused by the server: no common replication protocol version: s speaks 3, c speaks 2 \(upgrade cvserver on c\)$/,
      );
      return true;
    },
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.match(
    s3.status().lastVersionRefusal?.reason ?? '',
    /s speaks 3, c speaks 2 \(upgrade cvserver on c\)/,
  );
});

/** Runs `fn` with the daemons it starts pinned to protocol version 2 (the "old" cvserver). */
function asOld<T>(fn: () => T): T {
  process.env.CVSERVER_REPLICATION_MAX_VERSION = '2';
  try {
    return fn();
  } finally {
    delete process.env.CVSERVER_REPLICATION_MAX_VERSION;
  }
}

const inSync = (p: PeerStatus & { protocolVersion?: number }, version: number) =>
  p.connection === 'Connected' && p.outOfSyncBytes === 0 && !p.resync && p.protocolVersion === version;

function verifyIdentical(cl: ReplicaCluster, node: string): void {
  const v = cl.run(node, ['volume', 'verify', cl.volume, '--json']);
  assert.equal(v.status, 0, v.stderr);
  const results = JSON.parse(v.stdout) as { peer: string; mismatches: unknown[] }[];
  assert.ok(results.length > 0);
  for (const r of results) assert.deepEqual(r.mismatches, [], `replica ${r.peer} differs`);
}

function write(dir: string, name: string, mib: number): void {
  const r = spawnSync('dd', [
    'if=/dev/urandom',
    `of=${join(dir, name)}`,
    'bs=1M',
    `count=${mib}`,
    'conv=fsync',
  ]);
  assert.equal(r.status, 0, `dd ${name}`);
}

test('rolling upgrade of a replicated volume: old and new daemons keep replicating at every step, and end identical', async (t) => {
  const cl = new ReplicaCluster({
    replicas: 2,
    tiebreaker: true,
    size: '64M',
    basePort: 17600,
    dirTag: 'upgrade',
  });
  t.after(() => cl.cleanup());
  // Every daemon "old" at first.
  let uuid: string | undefined;
  for (const n of cl.nodes) {
    const meta = JSON.parse(cl.ok(n.name, cl.createArgs(n.name, uuid, true))) as { uuid: string };
    uuid ??= meta.uuid;
  }
  asOld(() => {
    for (const n of cl.nodes) cl.ok(n.name, ['volume', 'up', cl.volume]);
  });
  const aMnt = cl.node('a').mnt;
  const bMnt = cl.node('b').mnt;
  cl.ok('a', ['volume', 'primary', cl.volume, '--mkfs', 'ext4', '--mount', aMnt]);
  write(aMnt, 'one', 4);
  await cl.until(
    'a old cluster in sync on version 2',
    () => inSync(cl.peer('a', 'b'), 2) && inSync(cl.peer('a', 'tb'), 2),
  );

  // 1. Upgrade the secondary b (the old primary a keeps writing while it is down).
  cl.ok('b', ['volume', 'down', cl.volume]);
  write(aMnt, 'two', 4);
  cl.ok('b', ['volume', 'up', cl.volume]);
  await cl.until('new b resynced from old a, on version 2', () => inSync(cl.peer('a', 'b'), 2));
  assert.equal(cl.status('b').daemon.replication.server.versions.max, PROTOCOL_VERSION);
  verifyIdentical(cl, 'a');

  // 2. Move the primary to the upgraded node: new b replicates to old a and old tb.
  spawnSync('umount', [aMnt]);
  cl.ok('a', ['volume', 'secondary', cl.volume]);
  cl.ok('b', ['volume', 'primary', cl.volume, '--mount', bMnt]);
  assert.equal(readFileSync(join(bMnt, 'two')).length, 4 * 1024 * 1024);
  write(bMnt, 'three', 4);
  await cl.until(
    'new b to old a and tb on version 2',
    () => inSync(cl.peer('b', 'a'), 2) && inSync(cl.peer('b', 'tb'), 2),
  );
  verifyIdentical(cl, 'b');

  // 3. Upgrade a and the tiebreaker: everyone speaks the newest version again.
  for (const n of ['a', 'tb']) {
    cl.ok(n, ['volume', 'down', cl.volume]);
    write(bMnt, `four-${n}`, 2);
    cl.ok(n, ['volume', 'up', cl.volume]);
  }
  await cl.until(
    `all on version ${PROTOCOL_VERSION}`,
    () => inSync(cl.peer('b', 'a'), PROTOCOL_VERSION) && inSync(cl.peer('b', 'tb'), PROTOCOL_VERSION),
  );
  verifyIdentical(cl, 'b');
});
