import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initCredentials, loadNodeCredentials } from '../../src/agent/credentials.ts';
import { EtcdClient, EtcdError } from '../../src/agent/etcd/client.ts';
import { KeepAliveStream } from '../../src/agent/etcd/keepalive-stream.ts';
import { EtcdMember, type EtcdMemberOptions } from '../../src/agent/etcd/member.ts';
import { ROOT } from '../helpers/cli.ts';

// A 3-member etcd cluster with TLS on loopback addresses and ports used by no other test.
const NODES = [1, 2, 3].map((i) => ({
  name: `e${i}`,
  address: `127.0.0.6${i}`,
  client: `https://127.0.0.6${i}:2379${i}`,
  peer: `https://127.0.0.6${i}:2380${i}`,
}));
const NODE_BIN = process.execPath;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(what: string, ms: number, check: () => boolean | Promise<boolean>): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await check()) return Date.now() - start;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

function etcdctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      'etcdctl',
      args,
      { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 10_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
    );
  });
}

describe('etcd cluster with TLS (3 members on loopback)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cvs-etcd-'));
  const tlsDir = join(dir, 'tls');
  const members: EtcdMember[] = [];
  const strayPids = new Set<number>();
  let client: EtcdClient;

  const memberOptions = (n: (typeof NODES)[number]): EtcdMemberOptions => ({
    name: n.name,
    dataDir: join(dir, n.name, 'etcd'),
    peerUrl: n.peer,
    clientUrls: [n.client],
    initialCluster: NODES.map((m) => ({ name: m.name, peerUrl: m.peer })),
    tls: {
      ca: join(tlsDir, 'ca.crt'),
      cert: join(tlsDir, `${n.name}.crt`),
      key: join(tlsDir, `${n.name}.key`),
    },
    logFile: join(dir, n.name, 'etcd.log'),
    clusterToken: 'cvs-etcd-test',
    // Long enough that the leader-kill test sees the cluster work without the killed member.
    restartDelayMs: { min: 3000, max: 3000 },
  });

  before(async () => {
    initCredentials({
      secretFile: join(dir, 'secret'),
      tlsDir,
      nodes: NODES.map((n) => ({ name: n.name, addresses: [n.address] })),
    });
    for (const n of NODES) members.push(new EtcdMember(memberOptions(n)));
    for (const m of members) m.start();
    await Promise.all(members.map((m) => m.waitHealthy(15_000)));
    const creds = loadNodeCredentials(tlsDir, 'e1');
    client = new EtcdClient({ endpoints: NODES.map((n) => n.client), ...creds });
  });

  after(async () => {
    client?.close();
    await Promise.all(members.map((m) => m.stop(1000)));
    for (const pid of strayPids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('members and status', async () => {
    const list = await client.memberList();
    assert.deepEqual(list.map((m) => m.name).sort(), ['e1', 'e2', 'e3']);
    assert.deepEqual(list.find((m) => m.name === 'e2')?.clientUrls, [NODES[1]!.client]);
    const st = await client.status(NODES[0]!.client);
    assert.equal(st.version, '3.4.23');
    assert.notEqual(st.leader, '0');
  });

  test('put, range, compare-and-swap txn, prefix delete', async () => {
    await client.put('/t/a', JSON.stringify({ n: 1 }));
    await client.put('/t/b', 'héllo ✓');
    await client.put('/tx', 'outside the prefix');
    const one = await client.range('/t/a');
    assert.equal(one.kvs.length, 1);
    assert.deepEqual(JSON.parse(one.kvs[0]!.value), { n: 1 });
    assert.equal(await client.get('/t/b'), 'héllo ✓');
    assert.equal(await client.get('/t/none'), null);
    const all = await client.range('/t/', { prefix: true });
    assert.deepEqual(
      all.kvs.map((kv) => kv.key),
      ['/t/a', '/t/b'],
    );
    // Ranges in one read (how a snapshot leaves the events out): '/t/b' excluded, one revision.
    const around = await client.ranges([
      { key: '/t/', end: '/t/b' },
      { key: '/t/c', end: '/u' },
    ]);
    assert.deepEqual(
      around.kvs.map((kv) => kv.key),
      ['/t/a', '/tx'],
    );
    assert.equal(around.revision, all.revision);

    // Compare-and-swap on mod_revision: the first wins, a stale one fails and reads the current value.
    const rev = one.kvs[0]!.modRevision;
    const cas = (value: string) =>
      client.txn({
        compare: [{ key: '/t/a', target: 'modRevision', op: '=', value: rev }],
        success: [{ op: 'put', key: '/t/a', value }],
        failure: [{ op: 'range', key: '/t/a' }],
      });
    const won = await cas('v2');
    assert.equal(won.succeeded, true);
    const lost = await cas('v3');
    assert.equal(lost.succeeded, false);
    const read = lost.responses[0];
    assert.equal(read?.op, 'range');
    assert.equal(read?.op === 'range' ? read.kvs[0]?.value : null, 'v2');

    // Create-if-absent and value comparison.
    const create = await client.txn({
      compare: [{ key: '/t/c', target: 'createRevision', op: '=', value: 0 }],
      success: [{ op: 'put', key: '/t/c', value: 'new' }],
    });
    assert.equal(create.succeeded, true);
    const byValue = await client.txn({
      compare: [{ key: '/t/c', target: 'value', op: '=', value: 'new' }],
      success: [{ op: 'delete', key: '/t/c' }],
    });
    assert.deepEqual(byValue.responses, [{ op: 'delete', deleted: 1 }]);

    const del = await client.delete('/t/', { prefix: true });
    assert.equal(del.deleted, 2);
    assert.equal((await client.range('/t/', { prefix: true })).kvs.length, 0);
    assert.equal(await client.get('/tx'), 'outside the prefix');
  });

  test('lease: keepalives hold a key; it disappears about TTL s after they stop', async () => {
    const lease = await client.leaseGrant(2);
    assert.match(lease.id, /^[1-9][0-9]*$/);
    assert.equal(lease.ttl, 2);
    await client.put('/lease/k', 'held', { lease: lease.id });
    const kv = (await client.range('/lease/k')).kvs[0];
    assert.equal(kv?.lease, lease.id);
    // Lease comparison in a txn.
    const mine = await client.txn({
      compare: [{ key: '/lease/k', target: 'lease', op: '=', value: lease.id }],
      success: [],
    });
    assert.equal(mine.succeeded, true);

    // Renewals on the gRPC stream (keepalive-stream.ts), itself and through the client; the gateway agrees.
    const creds = loadNodeCredentials(tlsDir, 'e1');
    const stream = new KeepAliveStream(creds);
    try {
      for (let i = 0; i < 3; i++) assert.equal(await stream.renew(NODES[1]!.client, lease.id, 1000), 2);
    } finally {
      stream.close();
    }
    assert.equal((await client.leaseKeepAliveGateway(lease.id)).ttl, 2);
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const ka = await client.leaseKeepAlive(lease.id);
      assert.equal(ka.ttl, 2);
    }
    assert.equal(await client.get('/lease/k'), 'held', 'still there after 3 s of keepalives');
    const stoppedAt = Date.now();
    const gone = await waitFor(
      'the leased key to vanish',
      6000,
      async () => (await client.get('/lease/k')) === null,
    );
    assert.ok(gone >= 1500 && gone <= 3500, `key vanished ${gone} ms after the last keepalive (TTL 2 s)`);
    assert.ok(Date.now() - stoppedAt < 4000);
    assert.equal((await client.leaseKeepAlive(lease.id)).ttl, 0, 'an expired lease renews with ttl 0');
    assert.equal((await client.leaseKeepAliveGateway(lease.id)).ttl, 0);
    // A refused endpoint first: the renewal is still answered (by the gateway of the next), and the
    // next ones go to the stream of the member that answered.
    const refused = new EtcdClient({ endpoints: ['https://127.0.0.1:1', NODES[0]!.client], ...creds });
    try {
      const held = await refused.leaseGrant(5);
      for (let i = 0; i < 3; i++)
        assert.equal((await refused.leaseKeepAlive(held.id, { timeoutMs: 1000 })).ttl, 5);
      assert.equal(refused.endpoint, NODES[0]!.client);
      await refused.leaseRevoke(held.id);
      assert.equal((await refused.leaseKeepAlive(held.id)).ttl, 0, 'a revoked lease renews with ttl 0');
    } finally {
      refused.close();
    }
    assert.equal(await client.leaseRevoke(lease.id), false);

    const other = await client.leaseGrant(5);
    await client.put('/lease/r', 'x', { lease: other.id });
    assert.equal(await client.leaseRevoke(other.id), true);
    assert.equal(await client.get('/lease/r'), null);
  });

  test('clients without a certificate are refused by every member', async () => {
    await client.put('/x', 'secret-value');
    const ca = join(tlsDir, 'ca.crt');
    const runs = NODES.flatMap((n) => {
      const base = ['--endpoints', n.client, '--dial-timeout', '1s', '--command-timeout', '2s'];
      return [
        { n, how: 'no certificates', args: [...base, 'get', '/x'] },
        { n, how: 'insecure-skip-tls-verify', args: [...base, '--insecure-skip-tls-verify', 'get', '/x'] },
        { n, how: 'CA but no client certificate', args: [...base, '--cacert', ca, 'get', '/x'] },
      ];
    });
    const results = await Promise.all(runs.map(async (r) => ({ ...r, res: await etcdctl(r.args) })));
    for (const { n, how, res } of results) {
      assert.notEqual(res.code, 0, `${n.name} (${how}) answered: ${res.stdout}`);
      assert.doesNotMatch(res.stdout, /secret-value/, `${n.name} (${how})`);
    }
    for (const n of NODES)
      assert.match(
        readFileSync(join(dir, n.name, 'etcd.log'), 'utf8'),
        /client didn't provide a certificate/,
        `${n.name} logs the refused handshakes`,
      );
    // The same command with the node's certificate works: the refusals above are about the certificate.
    const e2 = NODES[1]!;
    const ok = await etcdctl([
      '--endpoints',
      e2.client,
      '--cacert',
      ca,
      '--cert',
      join(tlsDir, 'e2.crt'),
      '--key',
      join(tlsDir, 'e2.key'),
      'get',
      '/x',
      '--print-value-only',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), 'secret-value');
  });

  test('a malformed or unreachable endpoint is an EtcdError', async () => {
    const creds = loadNodeCredentials(tlsDir, 'e1');
    const nobody = new EtcdClient({ endpoints: ['https://127.0.0.61:23799'], ...creds, timeoutMs: 500 });
    try {
      await assert.rejects(nobody.get('/x'), (e) => e instanceof EtcdError && e.kind === 'unavailable');
    } finally {
      nobody.close();
    }
  });

  test('a watch follows the calls: away from a silent member, home again when it serves (preferFirst)', async () => {
    const creds = loadNodeCredentials(tlsDir, 'e1');
    const home = members[0]!;
    const c = new EtcdClient({ endpoints: NODES.map((n) => n.client), ...creds, preferFirst: true });
    const seen: string[] = [];
    const w = c.watch('/w/', (keys) => seen.push(...keys));
    const pid = home.pid!;
    const putSeen = async (key: string, ms: number) => {
      await waitFor(`a put of ${key}`, ms, () =>
        c.put(key, 'x').then(
          () => true,
          () => false,
        ),
      );
      return waitFor(`the watch to report ${key}`, ms, () => seen.includes(key));
    };
    try {
      await waitFor('the watch to be open', 5000, async () => {
        await c.put('/w/probe', String(Date.now()));
        return seen.includes('/w/probe');
      });
      assert.equal(c.endpoint, NODES[0]!.client);
      // A quiet, healthy stream is kept (not reopened after the client's deadline: no [prefix] report).
      await new Promise((r) => setTimeout(r, 2500));
      assert.ok(!seen.includes('/w/'), `reopened while healthy: ${seen.join(' ')}`);
      // A member that stops answering without closing anything (a power cut looks the same): the
      // calls time out there and move on, and the watch with them.
      process.kill(pid, 'SIGSTOP');
      await putSeen('/w/away', 8000);
      assert.notEqual(c.endpoint, NODES[0]!.client, 'the calls left the stopped member');
      assert.ok(seen.includes('/w/'), 'the reopened watch said that it may have missed changes');
      process.kill(pid, 'SIGCONT');
      // Home again once it has a leader: the next call after the probe goes there, and the watch too.
      const back = await waitFor('the calls to return home', 15_000, async () => {
        await c.get('/w/away').catch(() => null);
        return c.endpoint === NODES[0]!.client;
      });
      assert.ok(back > 0);
      await putSeen('/w/home', 8000);
    } finally {
      process.kill(pid, 'SIGCONT');
      w.close();
      c.close();
    }
    await home.waitHealthy(10_000);
  });

  test('killing the leader: the client keeps working, the member is restarted and catches up', async () => {
    const statuses = await Promise.all(NODES.map((n) => client.status(n.client)));
    const leaderIndex = statuses.findIndex((s) => s.memberId === s.leader);
    assert.ok(leaderIndex >= 0, 'one member is the leader');
    const leader = members[leaderIndex]!;
    const leaderNode = NODES[leaderIndex]!;
    // A client that starts at the leader, so the kill exercises failover.
    const creds = loadNodeCredentials(tlsDir, 'e1');
    const c = new EtcdClient({
      endpoints: [leaderNode.client, ...NODES.filter((n) => n !== leaderNode).map((n) => n.client)],
      ...creds,
    });
    try {
      await c.put('/k/before', '1');
      const pid = leader.pid!;
      process.kill(pid, 'SIGKILL');
      await waitFor('the leader to die', 2000, () => !pidAlive(pid));
      let lastError = '';
      const took = await waitFor('a write to succeed without the old leader', 8000, async () => {
        try {
          await c.put('/k/after', '2');
          return true;
        } catch (err) {
          lastError = String(err);
          return false;
        }
      });
      assert.notEqual(c.endpoint, leaderNode.client, `still on the dead leader? ${lastError}`);
      assert.ok(took < 5000, `writes resumed after ${took} ms`);
      assert.equal(await c.get('/k/before'), '1');

      // The member restarts its etcd and the old leader catches up.
      await waitFor('the member to restart etcd', 8000, () => leader.starts === 2 && leader.pid !== null);
      await leader.waitHealthy(10_000);
      const own = new EtcdClient({ endpoints: [leaderNode.client], ...creds });
      try {
        assert.equal(await own.get('/k/after'), '2');
      } finally {
        own.close();
      }
    } finally {
      c.close();
    }
  });

  test('etcd dies with the process that runs the member (pdeathsig)', async () => {
    // Run member e3 from a separate node process, then SIGKILL that process as a crash would.
    const e3 = members[2]!;
    await e3.stop(2000);
    const script = join(dir, 'run-member.ts');
    writeFileSync(
      script,
      [
        `import { EtcdMember } from ${JSON.stringify(join(ROOT, 'src/agent/etcd/member.ts'))};`,
        `const m = new EtcdMember(${JSON.stringify(memberOptions(NODES[2]!))});`,
        'm.start();',
        'await m.waitHealthy(10000);',
        'console.log(m.pid);',
        'setInterval(() => {}, 1000);',
      ].join('\n'),
    );
    const child = spawn(NODE_BIN, [script], { stdio: ['ignore', 'pipe', 'ignore'] });
    strayPids.add(child.pid!);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor('the child to report its etcd pid', 12_000, () => /^\d+\n/.test(out));
    const etcdPid = Number(out.trim());
    strayPids.add(etcdPid);
    assert.ok(pidAlive(etcdPid));
    assert.match(readFileSync(`/proc/${etcdPid}/cmdline`, 'utf8'), /etcd/);
    child.kill('SIGKILL');
    await waitFor('etcd to die with its parent', 3000, () => !pidAlive(etcdPid));
    // Back under this process's supervision for the cleanup.
    e3.start();
    await e3.waitHealthy(10_000);
  });
});
