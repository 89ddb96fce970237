/**
 * The agents' HTTP API and /metrics in a real lab (docs/http.md, docs/metrics.md): tokens made with the
 * CLI; every route's errors (no token, wrong scope, bad JSON, unknown field, unknown vserver or node)
 * answered with the right status and a JSON error naming the field, and nothing changed; the actions
 * recorded with the token's name; server-sent events; /metrics checked by promtool and against
 * `cvserver status --json`; volumes as `cvserver volumes --json`; backup now refused without a backup
 * configuration; failed authentications rate-limited per address.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { test } from 'node:test';
import type { ClusterStatus } from '../../src/agent/status.ts';
import type { VolumesAnswer } from '../../src/agent/volumes.ts';
import { eventsMatching, sleep, TestLab, until } from '../helpers/lab.ts';

interface Answer {
  status: number;
  body: string;
  json: unknown;
  headers: Record<string, string | string[] | undefined>;
}

function call(
  ca: string,
  url: string,
  method = 'GET',
  token?: string,
  body?: string,
  timeoutMs = 20_000,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const req = request(url, { method, ca, headers, agent: false, timeout: timeoutMs }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        data += c;
      });
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(data);
        } catch {}
        resolve({ status: res.statusCode ?? 0, body: data, json, headers: res.headers });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** Reads server-sent events for `ms`: the frames' event names and data. */
function stream(
  ca: string,
  url: string,
  token: string,
  ms: number,
): Promise<{ event: string; data: unknown }[]> {
  return new Promise((resolve, reject) => {
    const frames: { event: string; data: unknown }[] = [];
    let buf = '';
    const req = request(url, { ca, headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buf += c;
        let i = buf.indexOf('\n\n');
        while (i >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: (.*)$/m.exec(frame)?.[1];
          const data = /^data: (.*)$/m.exec(frame)?.[1];
          if (event && data) frames.push({ event, data: JSON.parse(data) });
          i = buf.indexOf('\n\n');
        }
      });
    });
    req.on('error', (e) => (e.message === 'done' ? undefined : reject(e)));
    setTimeout(() => {
      req.destroy(new Error('done'));
      resolve(frames);
    }, ms);
    req.end();
  });
}

test('HTTP API and /metrics: tokens, scopes, errors, actions with who, SSE, metrics, rate limit', async (t) => {
  const lab = await TestLab.up(t, { letter: 'm' });
  const ca = readFileSync(join(lab.dir, 'tls', 'ca.crt'), 'utf8');
  const base = `https://${lab.nodeAddress('n1')}:9443`;
  const cli = async (node: string, args: string[]) => {
    const r = await lab.exec(node, args, 90_000);
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const admin = (
    JSON.parse(await cli('n1', ['token', 'create', 'adm', '--scope', 'admin', '--json'])) as {
      token: string;
    }
  ).token;
  const reader = (JSON.parse(await cli('n2', ['token', 'create', 'viewer', '--json'])) as { token: string })
    .token;
  const listed = await cli('n3', ['token', 'list', '--json']);
  assert.match(listed, /"viewer"/);
  assert.doesNotMatch(listed, /sha256|cvs_/, 'token list shows neither tokens nor hashes');
  const dup = await lab.exec('n1', ['token', 'create', 'adm'], 90_000);
  assert.notEqual(dup.status, 0);
  assert.match(dup.stderr, /exists/);

  // Reads: the same objects as the CLI's --json.
  const cliStatus = JSON.parse(await cli('n1', ['status', '--json'])) as ClusterStatus;
  const st = await call(ca, `${base}/api/status`, 'GET', reader);
  assert.equal(st.status, 200, st.body);
  assert.deepEqual(Object.keys(st.json as object).sort(), Object.keys(cliStatus).sort());
  const vs = (await call(ca, `${base}/api/vservers/demo`, 'GET', reader))
    .json as ClusterStatus['vservers'][number];
  assert.equal(vs.name, 'demo');
  assert.deepEqual(Object.keys(vs).sort(), Object.keys(cliStatus.vservers[0]!).sort());
  const nodes = (await call(ca, `${base}/api/nodes`, 'GET', reader)).json as ClusterStatus['nodes'];
  assert.deepEqual(
    nodes.map((n) => n.name),
    ['n1', 'n2', 'n3'],
  );
  assert.equal((await call(ca, `${base}/api/links`, 'GET', reader)).status, 200);
  const ev = await call(ca, `${base}/api/events?limit=5`, 'GET', reader);
  assert.equal((ev.json as { events: unknown[] }).events.length, 5);
  // Volumes: the same answer as `cvserver volumes --json` (one handler); each replica's fields.
  const cliVolumes = JSON.parse(await cli('n2', ['volumes', '--json'])) as VolumesAnswer;
  const vols = await call(ca, `${base}/api/volumes`, 'GET', reader);
  assert.equal(vols.status, 200, vols.body);
  const shape = (a: VolumesAnswer) =>
    a.volumes.map((v) => ({ ...v, replicas: v.replicas.map((r) => `${r.node} ${r.role}`) }));
  assert.deepEqual(shape(vols.json as VolumesAnswer), shape(cliVolumes));
  const demoVol = (vols.json as VolumesAnswer).volumes.find((v) => v.vserver === 'demo');
  assert.ok(demoVol && demoVol.replicas.length >= 2 && demoVol.size && demoVol.node, vols.body);
  assert.deepEqual(Object.keys(demoVol.replicas[0]!).sort(), [
    'diskState',
    'epoch',
    'node',
    'outOfSyncBytes',
    'resyncBytesPerSecond',
    'role',
    'splitBrain',
    'suspendedWrites',
    'upToDate',
  ]);
  assert.ok(
    demoVol.replicas.some((r) => r.role === 'primary' && r.node === demoVol.node),
    vols.body,
  );
  const fo = await call(ca, `${base}/api/failovers`, 'GET', reader);
  assert.equal(fo.status, 200, fo.body);
  assert.ok(Array.isArray((fo.json as { failovers: unknown }).failovers), fo.body);
  const who = (await call(ca, `${base}/api/whoami`, 'GET', reader)).json;
  assert.deepEqual(who, { name: 'viewer', scope: 'read', node: 'n1' });

  // Errors: status, JSON error naming the field, and nothing changed.
  const before = await lab.status('n1');
  const demoNode = before.vservers.find((v) => v.name === 'demo')!.node!;
  const other = ['n1', 'n2', 'n3'].find((n) => n !== demoNode)!;
  const writes: [string, string][] = [
    ['/api/vservers/demo/migrate', JSON.stringify({ node: other })],
    ['/api/vservers/demo/clear', '{}'],
    [`/api/nodes/${other}/standby`, '{}'],
    [`/api/nodes/${other}/unstandby`, '{}'],
    ['/api/maintenance', '{"on":true}'],
    ['/api/vservers/demo/backup', '{}'],
  ];
  const startedAt = Date.now();
  const cases: [string, string, string | undefined, string | undefined, number, string][] = [];
  for (const [path, body] of writes) {
    cases.push([path, 'POST', undefined, body, 401, 'authorization']);
    cases.push([path, 'POST', reader, body, 403, 'scope']);
    cases.push([path, 'POST', admin, '{"node":', 400, 'body']);
    cases.push([path, 'POST', admin, JSON.stringify({ ...JSON.parse(body), extra: 1 }), 400, 'extra']);
  }
  for (const path of [
    '/api/status',
    '/api/nodes',
    '/api/vservers',
    '/api/links',
    '/api/events',
    '/api/volumes',
    '/api/failovers',
    '/metrics',
  ])
    cases.push([path, 'GET', undefined, undefined, 401, 'authorization']);
  cases.push(['/api/vservers/nope/migrate', 'POST', admin, '{"node":"n1"}', 404, 'vserver']);
  cases.push(['/api/vservers/nope/clear', 'POST', admin, '{}', 404, 'vserver']);
  cases.push(['/api/vservers/nope', 'GET', reader, undefined, 404, 'vserver']);
  cases.push(['/api/vservers/demo/migrate', 'POST', admin, '{"node":"n9"}', 400, 'node']);
  cases.push(['/api/nodes/n9/standby', 'POST', admin, '{}', 404, 'node']);
  cases.push(['/api/maintenance', 'POST', admin, '{"on":"yes"}', 400, 'on']);
  cases.push(['/api/events?limit=-1', 'GET', reader, undefined, 400, 'limit']);
  cases.push(['/api/status', 'POST', reader, '{}', 405, 'method']);
  // Backup now: the lab's demo has no backup configuration (a clear 409; lab-backup runs one).
  cases.push(['/api/vservers/demo/backup', 'POST', admin, '{}', 409, 'vserver']);
  cases.push(['/api/vservers/nope/backup', 'POST', admin, '{}', 404, 'vserver']);
  cases.push(['/api/vservers/demo/backup', 'GET', admin, undefined, 405, 'method']);
  cases.push(['/api/volumes', 'POST', admin, '{}', 405, 'method']);
  cases.push(['/api/volumes?node=n1', 'GET', reader, undefined, 400, 'node']);
  cases.push(['/api/failovers?limit=0', 'GET', reader, undefined, 400, 'limit']);
  for (const [path, method, token, body, status, field] of cases) {
    const r = await call(ca, `${base}${path}`, method, token, body);
    assert.equal(
      r.status,
      status,
      `${method} ${path} ${body ?? ''} (${token ? 'token' : 'no token'}): ${r.body}`,
    );
    assert.match(String(r.headers['content-type']), /application\/json/);
    const e = r.json as { error?: unknown; field?: unknown };
    assert.equal(typeof e.error, 'string', r.body);
    assert.equal(e.field, field, `${method} ${path}: ${r.body}`);
  }
  const after = await lab.status('n1');
  assert.equal(after.maintenance, null);
  assert.ok(after.nodes.every((n) => n.standby === null));
  assert.equal(after.vservers.find((v) => v.name === 'demo')!.node, demoNode);
  assert.equal(
    after.vservers.find((v) => v.name === 'demo')!.epoch,
    before.vservers.find((v) => v.name === 'demo')!.epoch,
  );
  await sleep(1500);
  assert.deepEqual(eventsMatching(await lab.events(), /by token/, startedAt), [], 'no action was recorded');
  const noBackup = await lab.exec('n3', ['backup', 'now', 'demo']);
  assert.notEqual(noBackup.status, 0, 'the CLI is refused the same way');
  assert.match(noBackup.stderr, /no backup configuration/);

  // Server-sent events: the status now, then the log as it grows (an action by the admin token).
  const frames = stream(ca, `${base}/api/events/stream`, reader, 6000);
  await sleep(1500);
  const on = await call(ca, `${base}/api/maintenance`, 'POST', admin, '{"on":true}');
  assert.equal(on.status, 200, on.body);
  const got = await frames;
  assert.ok(got.some((f) => f.event === 'status' && (f.data as ClusterStatus).cluster === before.cluster));
  const logged = got.filter((f) => f.event === 'log').flatMap((f) => f.data as { text: string }[]);
  assert.ok(
    logged.some((e) => /maintenance on, by token adm on n1/.test(e.text)),
    `the stream carried the action: ${logged.map((e) => e.text).join(' | ')}`,
  );
  await until(
    'maintenance on in status',
    async () => (await lab.status('n2')).maintenance?.by === 'token adm on n1',
    5000,
  );
  assert.equal((await call(ca, `${base}/api/maintenance`, 'POST', admin, '{"on":false}')).status, 200);
  const sb = await call(ca, `${base}/api/nodes/${other}/standby`, 'POST', admin, '');
  assert.equal(sb.status, 200, sb.body);
  await until(
    'standby shown',
    async () => (await lab.status('n1')).nodes.find((n) => n.name === other)?.standby,
    5000,
  );
  assert.equal((await call(ca, `${base}/api/nodes/${other}/unstandby`, 'POST', admin)).status, 200);

  // A migrate through the API (on another node's agent) moves the demo, recorded with the token's name.
  const base2 = `https://${lab.nodeAddress('n2')}:9443`;
  const mig = await call(
    ca,
    `${base2}/api/vservers/demo/migrate`,
    'POST',
    admin,
    JSON.stringify({ node: other }),
  );
  assert.equal(mig.status, 200, mig.body);
  await until(
    `demo healthy on ${other}`,
    async () => {
      const d = await lab.whereIsDemo();
      return d.node === other && d.status === 'healthy';
    },
    90_000,
  );
  const evs = await lab.events();
  for (const re of [
    /maintenance on, by token adm on n1/,
    /standby on, by token adm/,
    /migrate to .* requested by token adm on n2/,
  ])
    assert.ok(eventsMatching(evs, re, startedAt).length > 0, `event ${re}`);

  // /metrics: promtool accepts it; values as `cvserver status --json` shows them.
  const m = await call(ca, `${base}/metrics`, 'GET', reader);
  assert.equal(m.status, 200);
  assert.match(String(m.headers['content-type']), /text\/plain; version=0\.0\.4/);
  const p = spawnSync('promtool', ['check', 'metrics'], { input: m.body, encoding: 'utf8' });
  assert.equal(p.status, 0, `promtool: ${p.stdout}${p.stderr}`);
  const s = JSON.parse(await cli('n1', ['status', '--json'])) as ClusterStatus;
  const value = (line: string) => {
    const l = m.body.split('\n').find((x) => x.startsWith(`${line} `));
    assert.ok(l, `metric ${line} missing`);
    return Number(l.slice(line.length + 1));
  };
  assert.equal(value('cvserver_cluster_quorate'), 1);
  assert.equal(value(`cvserver_node_manager{node="${s.manager}"}`), 1);
  for (const n of s.nodes)
    assert.equal(
      value(`cvserver_node_lease_alive{node="${n.name}",role="${n.role}"}`),
      n.lease === 'alive' ? 1 : 0,
    );
  const demo = s.vservers.find((v) => v.name === 'demo')!;
  assert.equal(value(`cvserver_vserver_node{vserver="demo",node="${demo.node}"}`), 1);
  assert.equal(value('cvserver_vserver_epoch{vserver="demo"}'), demo.epoch);
  assert.equal(value(`cvserver_vserver_state{vserver="demo",state="${demo.status}"}`), 1);
  for (const r of demo.replicas)
    assert.equal(value(`cvserver_volume_role{volume="demo",node="${r.node}",role="${r.role}"}`), 1);
  assert.ok(value('cvserver_agent_resident_memory_bytes') > 10_000_000);
  assert.ok(value('cvserver_link_up{from="n1",to="n2",link="0"}') === 1);

  // Revoked: refused (by every agent within 2 s; each try short, so that one slow answer on a loaded
  // machine is not the whole wait).
  await cli('n3', ['token', 'revoke', 'viewer']);
  const revokedAt = Date.now();
  await until(
    'the revoked token refused on n2',
    async () => (await call(ca, `${base2}/api/status`, 'GET', reader, undefined, 3000)).status === 401,
    10_000,
  );
  t.diagnostic(`revoked token refused on n2 after ${Date.now() - revokedAt} ms`);

  // Brute force: 10 failures a minute from an address, then 429 even for a right token; others unaffected.
  for (let i = 0; i < 10; i++) {
    const r = await call(ca, `${base}/api/status`, 'GET', `cvs_guess${i}`);
    assert.equal(r.status, 401);
  }
  const limited = await call(ca, `${base}/api/status`, 'GET', admin);
  assert.equal(limited.status, 429, limited.body);
  assert.equal((limited.json as { field: string }).field, 'authorization');
  assert.ok(Number(limited.headers['retry-after']) > 0);
  assert.equal(
    (await call(ca, `${base2}/api/status`, 'GET', admin)).status,
    200,
    "another agent's limit is its own",
  );
});
