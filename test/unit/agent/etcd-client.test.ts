import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initCredentials, loadNodeCredentials, subjectAltNames } from '../../../src/agent/credentials.ts';
import { EtcdClient, EtcdError } from '../../../src/agent/etcd/client.ts';
import { etcdArgs } from '../../../src/agent/etcd/member.ts';
import {
  decodeKeepAlive,
  decodeRange,
  decodeTxn,
  encodeCompare,
  encodeTxn,
  keyRange,
  prefixEnd,
  prefixRangeEnd,
} from '../../../src/agent/etcd/wire.ts';
import { UserError } from '../../../src/lib/errors.ts';

const b = (s: string) => Buffer.from(s).toString('base64');

describe('etcd wire encoding', () => {
  test('prefix range end is the prefix with its last byte incremented', () => {
    assert.deepEqual(prefixRangeEnd(Buffer.from('/a/')), Buffer.from('/a0'));
    assert.deepEqual(prefixRangeEnd(Buffer.from([0x61, 0xff])), Buffer.from([0x62]));
    assert.deepEqual(prefixRangeEnd(Buffer.from([0xff, 0xff])), Buffer.from([0]));
    assert.deepEqual(keyRange('/v/', true), { key: b('/v/'), range_end: b('/v0') });
    assert.deepEqual(keyRange('', true), { key: 'AA==', range_end: 'AA==' });
    assert.deepEqual(keyRange('é'), { key: b('é') });
  });

  test('compares and ops in the gateway JSON form; lease IDs stay decimal strings', () => {
    assert.deepEqual(encodeCompare({ key: 'k', target: 'createRevision', op: '=', value: 0 }), {
      key: b('k'),
      result: 'EQUAL',
      target: 'CREATE',
      create_revision: '0',
    });
    assert.deepEqual(encodeCompare({ key: 'k', target: 'lease', op: '!=', value: '7587883316400445313' }), {
      key: b('k'),
      result: 'NOT_EQUAL',
      target: 'LEASE',
      lease: '7587883316400445313',
    });
    assert.throws(() => encodeCompare({ key: 'k', target: 'lease', op: '=', value: '1e3' }), /decimal/);
    assert.deepEqual(
      encodeTxn({
        compare: [{ key: 'k', target: 'value', op: '>', value: 'v' }],
        success: [{ op: 'put', key: 'k', value: 'w', lease: '9223372036854775807' }],
        failure: [
          { op: 'delete', key: 'p/', prefix: true },
          { op: 'range', key: 'k' },
        ],
      }),
      {
        compare: [{ key: b('k'), result: 'GREATER', target: 'VALUE', value: b('v') }],
        success: [{ request_put: { key: b('k'), value: b('w'), lease: '9223372036854775807' } }],
        failure: [
          { request_delete_range: { key: b('p/'), range_end: b('p0') } },
          { request_range: { key: b('k') } },
        ],
      },
    );
  });

  test('a range with an end (keys around a prefix left out): the end of a prefix is its last character + 1', () => {
    assert.equal(prefixEnd('/c/events/'), '/c/events0');
    assert.equal(prefixEnd('/c/'), '/c0');
    assert.throws(() => prefixEnd('/c/é'), /ASCII/);
    assert.deepEqual(encodeTxn({ compare: [], success: [{ op: 'range', key: '/c/', end: '/c/events/' }] }), {
      compare: [],
      success: [{ request_range: { key: b('/c/'), range_end: b('/c/events/') } }],
      failure: [],
    });
  });

  test('replies: defaults for left-out fields, big lease IDs kept exact', () => {
    const r = decodeRange({
      header: { revision: '12' },
      kvs: [
        {
          key: b('a'),
          value: b('{"x":1}'),
          create_revision: '3',
          mod_revision: '12',
          version: '2',
          lease: '7587883316400445313',
        },
        { key: b('e') },
      ],
      count: '2',
    });
    assert.deepEqual(r, {
      revision: 12,
      count: 2,
      kvs: [
        {
          key: 'a',
          value: '{"x":1}',
          createRevision: 3,
          modRevision: 12,
          version: 2,
          lease: '7587883316400445313',
        },
        { key: 'e', value: '', createRevision: 0, modRevision: 0, version: 0, lease: '0' },
      ],
    });
    assert.deepEqual(decodeRange({ header: { revision: '5' } }), { kvs: [], count: 0, revision: 5 });
    assert.deepEqual(
      decodeTxn({ header: { revision: '4' }, responses: [{ response_put: { header: {} } }] }),
      {
        succeeded: false,
        revision: 4,
        responses: [{ op: 'put' }],
      },
    );
    assert.deepEqual(decodeKeepAlive('{"result":{"ID":"1","TTL":"3"}}\n'), { ttl: 3 });
    assert.deepEqual(decodeKeepAlive('{"result":{"ID":"1"}}\n'), { ttl: 0 });
    assert.deepEqual(decodeKeepAlive('{"error":{"grpc_code":14,"message":"no leader"}}'), {
      error: 'no leader',
    });
  });

  test('malformed replies throw MalformedReply, not TypeError', () => {
    assert.throws(() => decodeRange({ kvs: [{ key: 42 }] }), /malformed range reply: kvs.0.key/);
    assert.throws(() => decodeRange({ header: { revision: 'x' } }), /malformed range reply/);
    assert.throws(() => decodeRange({ header: { revision: '99999999999999999999' } }), /not a safe integer/);
    assert.throws(() => decodeRange('hello'), /malformed range reply/);
    assert.throws(() => decodeTxn({ responses: [{}] }), /unknown kind/);
    assert.throws(() => decodeKeepAlive(''), /empty/);
    assert.throws(() => decodeKeepAlive('{oops'), /not JSON/);
  });

  test('etcd command line: TLS everywhere, state new/existing, loopback not advertised', () => {
    const args = etcdArgs(
      {
        name: 'n1',
        dataDir: '/d',
        peerUrl: 'https://10.0.0.1:2380',
        clientUrls: ['https://10.0.0.1:2379', 'https://127.0.0.1:2379'],
        initialCluster: [
          { name: 'n1', peerUrl: 'https://10.0.0.1:2380' },
          { name: 'n2', peerUrl: 'https://10.0.0.2:2380' },
        ],
        tls: { ca: '/t/ca.crt', cert: '/t/n1.crt', key: '/t/n1.key' },
        logFile: '/l',
      },
      false,
    );
    const flag = (f: string) => args[args.indexOf(f) + 1];
    for (const f of ['--client-cert-auth', '--peer-client-cert-auth']) assert.ok(args.includes(f), f);
    assert.equal(flag('--listen-client-urls'), 'https://10.0.0.1:2379,https://127.0.0.1:2379');
    assert.equal(flag('--advertise-client-urls'), 'https://10.0.0.1:2379');
    assert.equal(flag('--initial-cluster'), 'n1=https://10.0.0.1:2380,n2=https://10.0.0.2:2380');
    assert.equal(flag('--initial-cluster-state'), 'new');
    assert.equal(flag('--peer-trusted-ca-file'), '/t/ca.crt');
    assert.equal(flag('--election-timeout'), '1000');
  });

  test('certificate SANs: addresses, loopback, localhost, the node name', () => {
    assert.deepEqual(subjectAltNames({ name: 'n1', addresses: ['10.0.0.1', '127.0.0.1', 'n1.example'] }), [
      'IP:10.0.0.1',
      'IP:127.0.0.1',
      'DNS:n1.example',
      'DNS:localhost',
      'DNS:n1',
    ]);
  });
});

/** A fake gateway: each test sets how it answers. */
describe('EtcdClient against a fake HTTPS gateway', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cvs-etcdclient-'));
  let creds: { ca: string; cert: string; key: string };
  const servers: Server[] = [];
  const urls: string[] = [];
  const handlers: ((path: string, body: string) => { status?: number; body: string } | 'hang')[] = [];
  const seen: string[][] = [[], []];

  before(async () => {
    initCredentials({
      secretFile: join(dir, 'secret'),
      tlsDir: join(dir, 'tls'),
      nodes: [{ name: 'n1', addresses: ['127.0.0.1'] }],
    });
    creds = loadNodeCredentials(join(dir, 'tls'), 'n1');
    for (let i = 0; i < 2; i++) {
      handlers.push(() => ({ body: '{}' }));
      const server = createServer({ ...creds, requestCert: true, rejectUnauthorized: true }, (req, res) => {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          seen[i]!.push(req.url ?? '');
          const answer = handlers[i]!(req.url ?? '', body);
          if (answer === 'hang') return;
          res.writeHead(answer.status ?? 200, { 'content-type': 'application/json' });
          res.end(answer.body);
        });
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      servers.push(server);
      urls.push(`https://127.0.0.1:${(server.address() as AddressInfo).port}`);
    }
  });

  after(() => {
    for (const s of servers) s.closeAllConnections();
    for (const s of servers) s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('credentials: modes, refusal to overwrite, missing file named', () => {
    assert.equal(statSync(join(dir, 'secret')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'tls', 'ca.key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'tls', 'n1.key')).mode & 0o777, 0o600);
    assert.throws(
      () =>
        initCredentials({
          secretFile: join(dir, 's2'),
          tlsDir: join(dir, 'tls'),
          nodes: [{ name: 'n2', addresses: [] }],
        }),
      (e) => e instanceof UserError && /refusing to overwrite .*ca\.crt/.test(e.message),
    );
    assert.throws(() => statSync(join(dir, 's2')), /ENOENT/, 'nothing written on refusal');
    assert.throws(() => loadNodeCredentials(join(dir, 'tls'), 'n9'), /n9\.crt: missing/);
  });

  test('decodes a reply; keys and values are base64 inside', async () => {
    handlers[0] = (path, body) => {
      assert.equal(path, '/v3/kv/range');
      assert.deepEqual(JSON.parse(body), { key: b('/k') });
      return {
        body: JSON.stringify({
          header: { revision: '3' },
          kvs: [{ key: b('/k'), value: b('v'), mod_revision: '3' }],
        }),
      };
    };
    const c = new EtcdClient({ endpoints: [urls[0]!], ...creds });
    try {
      assert.equal(await c.get('/k'), 'v');
    } finally {
      c.close();
    }
  });

  test('a malformed reply is an EtcdError', async () => {
    const c = new EtcdClient({ endpoints: [urls[0]!], ...creds });
    try {
      for (const body of ['not json', '{"kvs":"x"}', '[1,2]', '']) {
        handlers[0] = () => ({ body });
        await assert.rejects(c.range('/k'), (e) => e instanceof EtcdError && e.kind === 'malformed', body);
      }
      handlers[0] = () => ({ body: '{"result":{"ID":"1","TTL":"x"}}' });
      await assert.rejects(c.leaseKeepAlive('1'), (e) => e instanceof EtcdError && e.kind === 'malformed');
      handlers[0] = () => ({ body: '{"header":{}}' });
      await assert.rejects(c.leaseGrant(2), (e) => e instanceof EtcdError && /no lease ID/.test(e.message));
    } finally {
      c.close();
    }
  });

  test('an error reply is rejected with its gRPC code; revoking a gone lease is false', async () => {
    const c = new EtcdClient({ endpoints: [urls[0]!], ...creds });
    try {
      handlers[0] = () => ({
        status: 400,
        body: '{"error":"etcdserver: too many operations","message":"etcdserver: too many operations","code":3}',
      });
      await assert.rejects(
        c.put('/k', 'v'),
        (e) =>
          e instanceof EtcdError &&
          e.kind === 'rejected' &&
          e.code === 3 &&
          /too many operations/.test(e.message),
      );
      handlers[0] = () => ({
        status: 404,
        body: '{"error":"etcdserver: requested lease not found","code":5}',
      });
      assert.equal(await c.leaseRevoke('42'), false);
    } finally {
      c.close();
    }
  });

  test('ranges: one read-only txn, the keys of every range in order, at its revision', async () => {
    let asked: unknown;
    handlers[0] = (path, body) => {
      asked = { path, body: JSON.parse(body) };
      const kvs = (keys: string[]) => ({
        kvs: keys.map((k) => ({ key: b(k), value: b(`v${k}`), mod_revision: '4' })),
      });
      return {
        body: JSON.stringify({
          header: { revision: '11' },
          succeeded: true,
          responses: [
            { response_range: kvs(['/c/a', '/c/b']) },
            { response_range: {} },
            { response_range: kvs(['/c/z']) },
          ],
        }),
      };
    };
    const c = new EtcdClient({ endpoints: [urls[0]!], ...creds });
    try {
      const r = await c.ranges([
        { key: '/c/', end: '/c/events/' },
        { key: '/c/events0', end: '/c/x' },
        { key: '/c/x', end: '/c0' },
      ]);
      assert.equal(r.revision, 11);
      assert.deepEqual(
        r.kvs.map((x) => [x.key, x.value, x.modRevision]),
        [
          ['/c/a', 'v/c/a', 4],
          ['/c/b', 'v/c/b', 4],
          ['/c/z', 'v/c/z', 4],
        ],
      );
      assert.deepEqual(asked, {
        path: '/v3/kv/txn',
        body: {
          compare: [],
          success: [
            { request_range: { key: b('/c/'), range_end: b('/c/events/') } },
            { request_range: { key: b('/c/events0'), range_end: b('/c/x') } },
            { request_range: { key: b('/c/x'), range_end: b('/c0') } },
          ],
          failure: [],
        },
      });
    } finally {
      c.close();
      handlers[0] = () => ({ body: '{}' });
    }
  });

  test('a hanging member: the call times out within its deadline, the next call goes to the other', async () => {
    handlers[0] = () => 'hang';
    handlers[1] = () => ({ body: '{"header":{"revision":"9"}}' });
    const c = new EtcdClient({ endpoints: [urls[0]!, urls[1]!], ...creds, timeoutMs: 300 });
    try {
      const t0 = Date.now();
      await assert.rejects(c.put('/k', 'v'), (e) => e instanceof EtcdError && e.kind === 'timeout');
      const took = Date.now() - t0;
      assert.ok(took >= 250 && took < 600, `took ${took} ms`);
      assert.equal(c.endpoint, urls[1]);
      assert.deepEqual(await c.put('/k', 'v'), { revision: 9 });
      // A connected member that does not answer uses up the call's deadline; the next call starts elsewhere.
      handlers[1] = () => 'hang';
      handlers[0] = () => ({ body: '{"header":{"revision":"9"}}' });
      await assert.rejects(
        c.range('/k', { timeoutMs: 200 }),
        (e) => e instanceof EtcdError && e.kind === 'timeout',
      );
      assert.equal(c.endpoint, urls[0]);
      assert.equal((await c.range('/k')).revision, 9);
    } finally {
      c.close();
      handlers[0] = () => ({ body: '{}' });
      handlers[1] = () => ({ body: '{}' });
    }
  });

  test('a member that accepts the connection but never completes TLS: the next endpoint in the same call', async () => {
    // The connect timer is armed only for a new connection (kept-alive ones skip it): still in force.
    const silent = createNetServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    handlers[1] = () => ({ body: '{"header":{"revision":"7"}}' });
    const stuck = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const c = new EtcdClient({
      endpoints: [stuck, urls[1]!],
      ...creds,
      timeoutMs: 900,
      connectTimeoutMs: 150,
    });
    try {
      const t0 = Date.now();
      assert.deepEqual(await c.put('/k', 'v'), { revision: 7 });
      const took = Date.now() - t0;
      assert.ok(took >= 140 && took < 800, `took ${took} ms`);
      assert.equal(c.endpoint, urls[1]);
      // Kept alive: the next calls reuse the connection (no connect timer), and answer.
      assert.deepEqual(await c.put('/k', 'v'), { revision: 7 });
    } finally {
      c.close();
      handlers[1] = () => ({ body: '{}' });
      silent.close();
    }
  });

  test('a refused connection or "no leader" moves on to the next endpoint in the same call', async () => {
    handlers[0] = () => ({ status: 503, body: '{"error":"etcdserver: no leader","code":14}' });
    handlers[1] = () => ({ body: '{"header":{"revision":"5"}}' });
    const dead = 'https://127.0.0.1:1';
    const c = new EtcdClient({ endpoints: [dead, urls[0]!, urls[1]!], ...creds });
    try {
      assert.deepEqual(await c.put('/k', 'v'), { revision: 5 });
      assert.equal(c.endpoint, urls[1]);
    } finally {
      c.close();
    }
    const none = new EtcdClient({ endpoints: [dead], ...creds });
    try {
      await assert.rejects(none.put('/k', 'v'), (e) => e instanceof EtcdError && e.kind === 'unavailable');
    } finally {
      none.close();
    }
  });
});

test('watch stream: concatenated JSON objects split across chunks, keys decoded', async () => {
  const { JsonStreamSplitter, watchedKeys } = await import('../../../src/agent/etcd/client.ts');
  const s = new JsonStreamSplitter();
  const k = (key: string) => Buffer.from(key).toString('base64');
  const a = JSON.stringify({ result: { created: true } });
  const b = JSON.stringify({
    result: { events: [{ kv: { key: k('/c/state') } }, { type: 'DELETE', kv: { key: k('/c/nodes/n1') } }] },
  });
  const text = `${a}\n${b}\n{"result":{"x":"a } in a string {"}}`;
  const out = [...s.push(text.slice(0, 17)), ...s.push(text.slice(17, 60)), ...s.push(text.slice(60))];
  assert.equal(out.length, 3);
  assert.deepEqual(watchedKeys(out[0]!), []);
  assert.deepEqual(watchedKeys(out[1]!), ['/c/state', '/c/nodes/n1']);
  assert.deepEqual(watchedKeys(out[2]!), []);
  assert.deepEqual(watchedKeys('garbage'), []);
});
