import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { leaseOf, observeCluster, REPLICA_REPORT_GRACE_MS } from '../../../src/agent/observation.ts';
import { RECORD_VERSION } from '../../../src/agent/records.ts';
import type { Snapshot } from '../../../src/agent/store.ts';
import { parseClusterConfig } from '../../../src/cluster/config.ts';
import { emptyState } from '../../../src/cluster/manager.ts';
import type { ManagerState, VserverState } from '../../../src/cluster/types.ts';

const file = join(import.meta.dirname, '../../fixtures/cluster/three-nodes.yaml');
const spec = parseClusterConfig(readFileSync(file, 'utf8'), file);
const NOW = 1_000_000;

function snapshot(alive: string[], upToDate: string[], startedAt = NOW - 60_000): Snapshot {
  const nodes: Snapshot['nodes'] = {};
  const reports: Snapshot['reports'] = {};
  for (const n of alive) {
    nodes[n] = { version: RECORD_VERSION, node: n, agentVersion: 'x', pid: 1, startedAt, lease: '7' };
    reports[n] = {
      version: RECORD_VERSION,
      node: n,
      at: NOW,
      fenced: false,
      vservers: n === alive[0] ? { demo: { status: 'healthy', since: 5, epoch: 1, health: 'healthy' } } : {},
      replicas: upToDate.includes(n)
        ? { demo: { role: 'secondary', diskState: 'UpToDate', upToDate: true, epoch: 1, failed: false } }
        : {},
    };
  }
  return {
    revision: 1,
    format: undefined,
    config: undefined,
    nodes,
    reports,
    manager: undefined,
    state: undefined,
    stateProblem: undefined,
    requests: [],
    initialized: new Set(),
    standby: {},
    maintenance: undefined,
    backups: {},
    backupNow: {},
    problems: [],
  };
}

test('leases: alive while the node key exists; expired once seen; never before', () => {
  const prev = emptyState();
  prev.nodes.n1 = 'alive';
  const snap = snapshot(['n2'], []);
  assert.equal(leaseOf('n2', snap, prev), 'alive');
  assert.equal(leaseOf('n1', snap, prev), 'expired');
  assert.equal(leaseOf('n3', snap, prev), 'never');
});

test('up-to-date replicas are those live nodes that say so; reports only from live nodes', () => {
  const obs = observeCluster(spec, snapshot(['n1', 'n2'], ['n1', 'n2']), emptyState(), NOW);
  const demo = obs.vservers.find((v) => v.name === 'demo')!;
  assert.deepEqual(demo.upToDate, ['n1', 'n2']);
  assert.deepEqual(demo.stale, ['n3']);
  assert.deepEqual(Object.keys(demo.reports), ['n1']);
  assert.deepEqual(
    obs.nodes.map((n) => [n.name, n.lease]),
    [
      ['n1', 'alive'],
      ['n2', 'alive'],
      ['n3', 'never'],
    ],
  );
});

test('a vserver not placed yet waits for freshly started replica nodes to report (no race at start)', () => {
  // n1 started 1 s ago and has not reported its replica; n2 has.
  const snap = snapshot(['n1', 'n2'], ['n2'], NOW - 1000);
  const early = observeCluster(spec, snap, emptyState(), NOW);
  assert.deepEqual(early.vservers[0]!.upToDate, []);
  // After the grace, placement goes on without it.
  const late = observeCluster(spec, snap, emptyState(), NOW - 1000 + REPLICA_REPORT_GRACE_MS);
  assert.deepEqual(late.vservers[0]!.upToDate, ['n2']);
  // A placed vserver never waits (a failover must not).
  const placed: ManagerState = { ...emptyState(), vservers: { demo: { node: 'n2' } as VserverState } };
  const moved = observeCluster(spec, snap, placed, NOW);
  assert.deepEqual(moved.vservers[0]!.upToDate, ['n2']);
});

test('standby and maintenance: what the operator set reaches the manager observation', () => {
  const snap = snapshot(['n1', 'n2', 'n3'], ['n1', 'n2', 'n3']);
  snap.standby.n2 = { version: RECORD_VERSION, at: NOW, by: 'root on n1' };
  snap.maintenance = { version: RECORD_VERSION, at: NOW, by: 'root on n1' };
  const obs = observeCluster(spec, snap, emptyState(), NOW);
  assert.deepEqual(
    obs.nodes.map((n) => [n.name, n.standby]),
    [
      ['n1', false],
      ['n2', true],
      ['n3', false],
    ],
  );
  assert.equal(obs.maintenance, true);
});
