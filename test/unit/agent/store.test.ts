import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EtcdClient, KeyValue } from '../../../src/agent/etcd/client.ts';
import { keysFor, RECORD_VERSION } from '../../../src/agent/records.ts';
import { ClusterStore } from '../../../src/agent/store.ts';

function kv(key: string, value: string, lease = '0'): KeyValue {
  return { key, value, createRevision: 1, modRevision: 2, version: 1, lease };
}

/** Only `ranges` is used by snapshot(): the keys in the ranges it asks for (events are not). */
function fakeClient(kvs: KeyValue[]): EtcdClient {
  const ranges = async (rs: { key: string; end: string }[]) => ({
    kvs: rs.flatMap((r) => kvs.filter((x) => x.key >= r.key && x.key < r.end)),
    revision: 9,
  });
  return { ranges } as unknown as EtcdClient;
}

test('a snapshot sorts the records by kind and sets malformed or foreign ones aside with a reason', async () => {
  const k = keysFor('c');
  const node = { version: RECORD_VERSION, node: 'n1', agentVersion: '1', pid: 5, startedAt: 1, lease: '77' };
  const store = new ClusterStore(
    fakeClient([
      kv(k.node('n1'), JSON.stringify(node), '77'),
      kv(k.node('n2'), 'not json'),
      kv(k.node('n3'), JSON.stringify({ ...node, node: 'n3', version: 2 })),
      kv(k.report('n1'), JSON.stringify({ version: RECORD_VERSION, node: 'n1' })),
      kv(k.manager, 'n1', '77'),
      kv(k.initialized('web'), '123'),
      kv(k.event(5, 'n1', 1), '{"whatever": true}'),
    ]),
    'c',
    'n1',
  );
  const s = await store.snapshot(100);
  assert.deepEqual(Object.keys(s.nodes), ['n1']);
  assert.deepEqual(s.manager, { node: 'n1', lease: '77' });
  assert.ok(s.initialized.has('web'));
  assert.deepEqual(s.reports, {});
  assert.equal(s.problems.length, 3);
  assert.match(s.problems[0]!, /nodes\/n2: not JSON/);
  assert.match(s.problems[1]!, /nodes\/n3: stored format version 2, this agent knows version 1/);
  assert.match(s.problems[2]!, /reports\/n1: at: /);
});

/** Every kind of record as this release writes it (one of each). */
function records(k: ReturnType<typeof keysFor>) {
  const v = RECORD_VERSION;
  return {
    [k.config]: {
      version: v,
      yaml: 'cluster: c\n',
      file: 'c.yaml',
      appliedAt: 1,
      appliedBy: 'n1',
      retired: {},
    },
    [k.node('n1')]: {
      version: v,
      node: 'n1',
      agentVersion: '0.2.0',
      pid: 5,
      startedAt: 1,
      lease: '77',
      formats: { min: 1, max: 1 },
    },
    [k.report('n1')]: {
      version: v,
      node: 'n1',
      at: 1,
      fenced: false,
      vservers: { web: { status: 'healthy', since: 1, epoch: 2, health: 'healthy' } },
      replicas: { web: { role: 'primary', diskState: 'UpToDate', upToDate: true, epoch: 2, failed: false } },
    },
    [k.state]: {
      version: v,
      manager: 'n1',
      at: 1,
      state: { vservers: {}, nodes: {} },
      table: { web: { node: 'n1', epoch: 2, restarts: 0 } },
    },
    [k.request('r1')]: { version: v, at: 1, by: 'n1', event: { kind: 'clear', vserver: 'web' } },
    [k.standby('n2')]: { version: v, at: 1, by: 'op' },
    [k.maintenance]: { version: v, at: 1, by: 'op' },
  };
}

function storeOf(entries: Record<string, unknown>): ClusterStore {
  return new ClusterStore(
    fakeClient(Object.entries(entries).map(([key, value]) => kv(key, JSON.stringify(value)))),
    'c',
    'n1',
  );
}

test('records written by a next-version agent with extra optional fields are read as before', async () => {
  const k = keysFor('c');
  const next: Record<string, unknown> = {};
  // Extra fields at the top and inside nested objects, as a later release might add.
  for (const [key, value] of Object.entries(records(k))) next[key] = { ...value, addedLater: { x: 1 } };
  const report = next[k.report('n1')] as {
    vservers: Record<string, object>;
    replicas: Record<string, object>;
  };
  report.vservers.web = { ...report.vservers.web, cpu: 0.5 };
  report.replicas.web = { ...report.replicas.web, snapshot: 'daily' };
  const event = next[k.request('r1')] as { event: object };
  event.event = { ...event.event, note: 'why' };
  const s = await storeOf(next).snapshot(100);
  assert.deepEqual(s.problems, []);
  assert.ok(s.config && s.nodes.n1 && s.reports.n1 && s.state && s.standby.n2 && s.maintenance);
  assert.equal(s.requests.length, 1);
  assert.equal(s.stateProblem, undefined);
  assert.equal(s.reports.n1?.vservers.web?.status, 'healthy');
  assert.deepEqual(s.nodes.n1?.formats, { min: 1, max: 1 });
});

test('records of a higher version are set aside with the reason; a set-aside state is not "no state"', async () => {
  const k = keysFor('c');
  const higher: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(records(k)))
    higher[key] = { ...value, version: RECORD_VERSION + 1 };
  const s = await storeOf(higher).snapshot(100);
  assert.equal(s.config, undefined);
  assert.deepEqual(s.nodes, {});
  assert.equal(s.state, undefined);
  assert.equal(s.problems.length, Object.keys(higher).length);
  for (const p of s.problems)
    assert.match(
      p,
      /^\/cvserver\/c\/[a-z/0-9]+: stored format version 2, this agent knows version 1 \(upgrade this agent\)$/,
    );
  assert.match(s.stateProblem ?? '', /^\/cvserver\/c\/state: stored format version 2/);

  // Malformed is set aside too; no state record at all is just that.
  const broken = await storeOf({ [k.state]: { version: RECORD_VERSION, manager: 'n1' } }).snapshot(100);
  assert.match(broken.stateProblem ?? '', /^\/cvserver\/c\/state: /);
  const none = await storeOf({}).snapshot(100);
  assert.equal(none.stateProblem, undefined);
});

test('the format record: read without a version check (it says the version), malformed set aside', async () => {
  const k = keysFor('c');
  const s = await storeOf({ [k.format]: { format: 2, at: 5, by: 'n3', later: true } }).snapshot(100);
  assert.deepEqual(s.format, { format: 2, at: 5, by: 'n3', modRevision: 2 });
  const bad = await storeOf({ [k.format]: { format: 'two' } }).snapshot(100);
  assert.equal(bad.format, undefined);
  assert.match(bad.problems[0] ?? '', /^\/cvserver\/c\/format: format: /);
  assert.equal((await storeOf({}).snapshot(100)).format, undefined);
});
