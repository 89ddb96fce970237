import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EtcdClient, KeyValue } from '../../../src/agent/etcd/client.ts';
import { keysFor, RECORD_VERSION } from '../../../src/agent/records.ts';
import { ClusterStore } from '../../../src/agent/store.ts';

function kv(key: string, value: string, lease = '0'): KeyValue {
  return { key, value, createRevision: 1, modRevision: 2, version: 1, lease };
}

/** Only `range` is used by snapshot(). */
function fakeClient(kvs: KeyValue[]): EtcdClient {
  return { range: async () => ({ kvs, count: kvs.length, revision: 9 }) } as unknown as EtcdClient;
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
