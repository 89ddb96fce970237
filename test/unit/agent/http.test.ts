import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { bearerToken, FailureLimiter } from '../../../src/agent/http/auth.ts';
import { escapeLabel, renderMetrics, vserverState } from '../../../src/agent/http/metrics.ts';
import { type Route, route } from '../../../src/agent/http/routes.ts';
import { freshEvents, LATE_MS, sseFrame } from '../../../src/agent/http/sse.ts';
import { allows, findToken, hashToken, newToken, type TokenRecord } from '../../../src/agent/http/tokens.ts';
import type { EventRecord } from '../../../src/agent/records.ts';
import type { ClusterStatus } from '../../../src/agent/status.ts';

const known = { vservers: ['demo', 'web'], fullNodes: ['n1', 'n2'], backups: ['demo'] };
const req = (method: string, path: string, body = '', query = '') => ({
  method,
  path,
  query: new URLSearchParams(query),
  body,
});
const errorOf = (r: Route) => {
  assert.equal(r.kind, 'error', JSON.stringify(r));
  return r as Extract<Route, { kind: 'error' }>;
};

test('routes: reads and actions become the socket requests, with their scope and who', () => {
  assert.deepEqual(route(req('GET', '/api/status'), known, 'token t'), {
    kind: 'api',
    scope: 'read',
    req: { op: 'status' },
  });
  assert.deepEqual(route(req('POST', '/api/vservers/demo/migrate', '{"node":"n2"}'), known, 'token t'), {
    kind: 'api',
    scope: 'admin',
    req: { op: 'migrate', vserver: 'demo', node: 'n2', by: 'token t' },
  });
  assert.deepEqual(route(req('POST', '/api/nodes/n1/standby'), known, 'token t'), {
    kind: 'api',
    scope: 'admin',
    req: { op: 'standby', node: 'n1', on: true, by: 'token t' },
  });
  assert.deepEqual(route(req('POST', '/api/maintenance', '{"on":false}'), known, 'x'), {
    kind: 'api',
    scope: 'admin',
    req: { op: 'maintenance', on: false, by: 'x' },
  });
  assert.deepEqual(route(req('GET', '/api/events', '', 'limit=5&since=10'), known, 'x'), {
    kind: 'api',
    scope: 'read',
    req: { op: 'events', limit: 5, since: 10 },
  });
  const one = route(req('GET', '/api/vservers/web'), known, 'x');
  assert.equal(one.kind === 'api' && one.select?.what, 'vserver');
  assert.deepEqual(route(req('GET', '/'), known, 'x'), { kind: 'static', file: 'index.html' });
  assert.deepEqual(route(req('GET', '/metrics'), known, 'x'), { kind: 'metrics' });
  assert.deepEqual(route(req('GET', '/api/events/stream'), known, 'x'), { kind: 'stream' });
  assert.deepEqual(route(req('GET', '/api/volumes'), known, 'x'), {
    kind: 'api',
    scope: 'read',
    req: { op: 'volumes' },
  });
  assert.deepEqual(route(req('GET', '/api/failovers', '', 'limit=100'), known, 'x'), {
    kind: 'api',
    scope: 'read',
    req: { op: 'failovers', limit: 100 },
  });
  assert.deepEqual(route(req('POST', '/api/vservers/demo/backup'), known, 'token t'), {
    kind: 'api',
    scope: 'admin',
    req: { op: 'backup-now', vserver: 'demo', by: 'token t' },
  });
  // Without a backup configuration: refused with 409 once the scope allows the action (a read token: 403).
  const none = route(req('POST', '/api/vservers/web/backup', '{}'), known, 'x');
  assert.equal(none.kind === 'api' && none.scope, 'admin');
  assert.equal(none.kind === 'api' && none.refuse?.status, 409);
  assert.equal(none.kind === 'api' && none.refuse?.field, 'vserver');
});

test('routes: every bad request is a 4xx naming the field', () => {
  const cases: [ReturnType<typeof req>, number, string][] = [
    [req('POST', '/api/vservers/demo/migrate', '{bad'), 400, 'body'],
    [req('POST', '/api/vservers/demo/migrate', '[1]'), 400, 'body'],
    [req('POST', '/api/vservers/demo/migrate', '{"node":"n2","force":true}'), 400, 'force'],
    [req('POST', '/api/vservers/demo/migrate', '{}'), 400, 'node'],
    [req('POST', '/api/vservers/demo/migrate', '{"node":"n9"}'), 400, 'node'],
    [req('POST', '/api/vservers/nope/migrate', '{"node":"n2"}'), 404, 'vserver'],
    [req('GET', '/api/vservers/nope'), 404, 'vserver'],
    [req('POST', '/api/nodes/n9/standby'), 404, 'node'],
    [req('POST', '/api/nodes/n1/standby', '{"x":1}'), 400, 'x'],
    [req('POST', '/api/maintenance', '{"on":"yes"}'), 400, 'on'],
    [req('POST', '/api/maintenance', ''), 400, 'on'],
    [req('POST', '/api/vservers/demo/clear', '{"why":"x"}'), 400, 'why'],
    [req('GET', '/api/events', '', 'limit=0'), 400, 'limit'],
    [req('GET', '/api/events', '', 'limit=abc'), 400, 'limit'],
    [req('GET', '/api/events', '', 'colour=red'), 400, 'colour'],
    [req('GET', '/api/status', '', 'brief=1'), 400, 'brief'],
    [req('GET', '/api/vservers/demo/migrate'), 405, 'method'],
    [req('DELETE', '/api/status'), 405, 'method'],
    [req('GET', '/api/nothing'), 404, 'path'],
    [req('GET', '/api/vservers/%E0%A4%A'), 404, 'path'],
    [req('POST', '/api/vservers/nope/backup'), 404, 'vserver'],
    [req('POST', '/api/vservers/demo/backup', '{"now":true}'), 400, 'now'],
    [req('POST', '/api/vservers/demo/backup', '{bad'), 400, 'body'],
    [req('GET', '/api/vservers/demo/backup'), 405, 'method'],
    [req('POST', '/api/volumes'), 405, 'method'],
    [req('GET', '/api/volumes', '', 'node=n1'), 400, 'node'],
    [req('GET', '/api/volumes/demo'), 404, 'path'],
    [req('GET', '/api/failovers', '', 'limit=0'), 400, 'limit'],
  ];
  for (const [r, status, field] of cases) {
    const e = errorOf(route(r, known, 'x'));
    assert.equal(e.status, status, `${r.method} ${r.path} ${r.body}: ${e.error}`);
    assert.equal(e.field, field, `${r.method} ${r.path} ${r.body}: ${e.error}`);
    assert.ok(e.error.length > 0);
  }
});

test('tokens: hashed, found in constant time, scopes', () => {
  const t = newToken();
  assert.match(t, /^cvs_[A-Za-z0-9_-]{43}$/);
  const rec = (name: string, token: string, scope: 'read' | 'admin'): TokenRecord => ({
    version: 1,
    name,
    scope,
    sha256: hashToken(token),
    createdAt: 0,
    createdBy: 'x',
  });
  const records = [rec('a', 'cvs_a', 'read'), rec('b', t, 'admin')];
  assert.equal(findToken(records, t)?.name, 'b');
  assert.equal(findToken(records, 'cvs_nope'), undefined);
  assert.ok(allows('admin', 'admin') && allows('admin', 'read') && allows('read', 'read'));
  assert.ok(!allows('read', 'admin'));
  assert.equal(bearerToken(undefined), null);
  assert.equal(bearerToken(`Bearer ${t}`), t);
  assert.equal(bearerToken('Basic abc'), undefined);
});

test('the failure limiter: 10 failures a minute per address, then refused until the window passes', () => {
  const l = new FailureLimiter(10, 60_000);
  for (let i = 0; i < 9; i++) l.fail('1.1.1.1', 1000 + i);
  assert.equal(l.blockedFor('1.1.1.1', 2000), 0);
  l.fail('1.1.1.1', 2000);
  assert.ok(l.blockedFor('1.1.1.1', 2001) > 0);
  assert.equal(l.blockedFor('2.2.2.2', 2001), 0, 'another address is not affected');
  assert.equal(l.blockedFor('1.1.1.1', 61_001), 0, 'the oldest failure left the window');
});

test('the event stream: frames, and only events not sent yet', () => {
  assert.equal(sseFrame('log', [1]), 'event: log\ndata: [1]\n\n');
  const e = (at: number, text: string): EventRecord => ({
    version: 1,
    at,
    node: 'n1',
    source: 'agent',
    text,
  });
  let r = freshEvents({ at: 0, seen: [] }, [e(1, 'a'), e(2, 'b'), e(2, 'c')]);
  assert.deepEqual(
    r.fresh.map((x) => x.text),
    ['a', 'b', 'c'],
  );
  r = freshEvents(r.cursor, [e(2, 'b'), e(2, 'c'), e(2, 'd'), e(3, 'e')]);
  assert.deepEqual(
    r.fresh.map((x) => x.text),
    ['d', 'e'],
  );
  r = freshEvents(r.cursor, [e(3, 'e')]);
  assert.deepEqual(r.fresh, []);
  // Another node flushes an older event after newer ones were sent: it is sent when it arrives.
  r = freshEvents(r.cursor, [e(2, 'b'), e(2, 'c'), e(2, 'd'), e(2, 'late'), e(3, 'e')]);
  assert.deepEqual(
    r.fresh.map((x) => x.text),
    ['late'],
  );
  assert.equal(r.cursor.at, 3);
  // What is older than the look-back window is forgotten (the poll no longer asks for it).
  r = freshEvents(r.cursor, [e(3 + LATE_MS, 'f')]);
  assert.deepEqual(
    r.cursor.seen.map((s) => s.at),
    [3, 3 + LATE_MS],
  );
});

function sampleStatus(): ClusterStatus {
  const replica = {
    role: 'primary',
    diskState: 'UpToDate',
    upToDate: true,
    epoch: 3,
    outOfSyncBytes: 4096,
    resyncBytesPerSecond: 0,
    suspendedWrites: 0,
    splitBrain: false,
  };
  return {
    cluster: 'c1',
    node: 'n1',
    manager: 'n2',
    maintenance: null,
    configApplied: true,
    format: 1,
    local: { lease: '1', leaseValidFor: 1, fenced: false, storeAgeMs: 200, lastError: '', refusal: '' },
    nodes: ['n1', 'n2'].map((name) => ({
      name,
      role: 'full',
      addresses: ['10.0.0.1'],
      lease: name === 'n1' ? 'alive' : 'expired',
      agentVersion: '0.2.0',
      formats: '1-1',
      fenced: false,
      standby: null,
    })),
    etcd: [],
    vservers: [
      {
        name: 'demo',
        desired: 'started',
        retired: false,
        node: 'n1',
        epoch: 3,
        status: 'healthy',
        since: 1,
        failed: null,
        address: null,
        restarts: 1,
        relocations: 2,
        failures: 2,
        backup: {
          schedule: '0 3 * * *',
          lastSuccess: { at: 1_700_000_000_000, bytesAdded: 2048, seconds: 3, snapshotId: 'ab', node: 'n1' },
          lastError: null,
          running: null,
          late: false,
        },
        replicas: [
          { node: 'n1', ...replica },
          { node: 'n2', ...replica, role: 'unreachable', diskState: '', outOfSyncBytes: null },
        ],
      },
      {
        name: 'say "hi"\\',
        desired: 'started',
        retired: false,
        node: null,
        epoch: 0,
        status: 'waiting: no node',
        since: null,
        failed: null,
        address: null,
        restarts: 0,
        relocations: 0,
        failures: 0,
        replicas: [],
      },
    ],
    problems: [],
    mesh: {
      node: 'n1',
      port: 5405,
      intervalMs: 250,
      deadAfterMs: 1000,
      problems: [],
      peers: [],
      links: [
        {
          peer: 'n2',
          link: 0,
          local: 'a',
          remote: 'b',
          state: 'up',
          forS: 1,
          lastHeardAgoMs: 1,
          rttLastMs: 0.3,
          rttAvgMs: 0.3,
          rttMaxMs: 0.4,
          lossPct: 0,
          receivedLastMinute: 1,
          lostLastMinute: 0,
          received: 10,
          lost: 1,
        },
      ],
      matrix: [
        { from: 'n1', to: 'n2', link: 0, state: 'up', rttMs: 0.5, lossPct: 2 },
        { from: 'n2', to: 'n1', link: 0, state: 'stale', rttMs: null, lossPct: null },
      ],
      sent: 100,
      sendErrors: 0,
      dropped: {
        short: 0,
        version: 0,
        cluster: 0,
        'unknown-node': 0,
        misdirected: 0,
        mac: 1,
        malformed: 0,
        replay: 0,
      },
      lastDrop: null,
    },
  } as unknown as ClusterStatus; // only what the metrics read (other fields grow with other issues)
}

test('metrics: values from the status, in base units, escaped labels', () => {
  const text = renderMetrics(
    sampleStatus(),
    {
      cpuUserSeconds: 1.5,
      cpuSystemSeconds: 0.5,
      residentBytes: 1000,
      startTimeSeconds: 10,
      version: '0.2.0',
    },
    [{ volume: 'demo', reads: 3, writes: 5, fsyncs: 2, bytesRead: 12288, bytesWritten: 20480 }],
  );
  const has = (line: string) => assert.ok(text.split('\n').includes(line), `missing: ${line}\n${text}`);
  has('cvserver_volume_io_bytes_total{volume="demo",node="n1",op="write"} 20480');
  has('cvserver_volume_io_operations_total{volume="demo",node="n1",op="fsync"} 2');
  has('cvserver_cluster_quorate 1');
  has('cvserver_node_lease_alive{node="n1",role="full"} 1');
  has('cvserver_node_lease_alive{node="n2",role="full"} 0');
  has('cvserver_node_manager{node="n2"} 1');
  has('cvserver_link_up{from="n1",to="n2",link="0"} 1');
  has('cvserver_link_rtt_seconds{from="n1",to="n2",link="0"} 0.0005');
  has('cvserver_link_loss_ratio{from="n1",to="n2",link="0"} 0.02');
  has('cvserver_vserver_state{vserver="demo",state="healthy"} 1');
  has('cvserver_vserver_state{vserver="demo",state="running"} 0');
  has('cvserver_vserver_relocations{vserver="demo"} 2');
  has('cvserver_volume_out_of_sync_bytes{volume="demo",node="n1"} 4096');
  has('cvserver_volume_role{volume="demo",node="n2",role="unreachable"} 1');
  has('cvserver_agent_cpu_seconds_total{mode="user"} 1.5');
  has('cvserver_mesh_dropped_packets_total{reason="mac"} 1');
  has('cvserver_backup_last_success_timestamp_seconds{job="demo"} 1700000000');
  has('cvserver_backup_last_success_added_bytes{job="demo"} 2048');
  has('cvserver_backup_last_run_failed{job="demo"} 0');
  has(`cvserver_vserver_state{vserver="say \\"hi\\"\\\\",state="unplaced"} 1`);
  assert.ok(!text.includes('from="n2",to="n1"'), 'a stale view is left out');
  assert.equal(vserverState('waiting: x'), 'unplaced');
  assert.equal(escapeLabel('a\nb'), 'a\\nb');
  // promtool (Debian's prometheus package) is the reference for the format.
  const p = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  if (p.error) return assert.fail(`promtool: ${p.error.message} (scripts/setup installs prometheus)`);
  assert.equal(p.status, 0, `${p.stdout}${p.stderr}`);
});
