import assert from 'node:assert/strict';
import { test } from 'node:test';
import { failoversFrom } from '../../../src/agent/failovers.ts';
import type { EventRecord } from '../../../src/agent/records.ts';
import { formatVolumes, type ReplicaView, syncText, volumesOf } from '../../../src/agent/volumes.ts';
import { backupNowDue } from '../../../src/backup/schedule.ts';

const replica = (node: string, over: Partial<ReplicaView> = {}): ReplicaView => ({
  node,
  role: 'secondary',
  diskState: 'UpToDate',
  upToDate: true,
  epoch: 3,
  outOfSyncBytes: 0,
  resyncBytesPerSecond: null,
  suspendedWrites: 0,
  splitBrain: false,
  ...over,
});

test('volumes: each vserver with its volume and replicas, the same shape for the CLI and the API', () => {
  const a = volumesOf(
    {
      vservers: [
        {
          name: 'demo',
          node: 'n1',
          retired: false,
          replicas: [
            replica('n1', { role: 'primary' }),
            replica('n2', {
              diskState: 'Inconsistent',
              upToDate: false,
              outOfSyncBytes: 3 << 20,
              resyncBytesPerSecond: 1 << 20,
            }),
          ],
        },
        { name: 'old', node: null, retired: true, replicas: [] },
      ] as unknown as Parameters<typeof volumesOf>[0]['vservers'],
    },
    { demo: { volume: { size: 1 << 30, filesystem: 'ext4', replicas: ['n1', 'n2'], port: 7790 } } },
  );
  assert.equal(a.volumes.length, 2);
  assert.deepEqual(
    { ...a.volumes[0], replicas: a.volumes[0]!.replicas.length },
    {
      vserver: 'demo',
      node: 'n1',
      size: 1 << 30,
      filesystem: 'ext4',
      port: 7790,
      retired: false,
      replicas: 2,
    },
  );
  assert.deepEqual(a.volumes[1], {
    vserver: 'old',
    node: null,
    size: null,
    filesystem: null,
    port: null,
    retired: true,
    replicas: [],
  });
  const rows = formatVolumes(a);
  assert.equal(rows.length, 2);
  assert.equal(rows[0]![3], 'primary (runs here)');
  assert.equal(rows[1]![7], 'resync 1M/s, 3M left');
  assert.equal(syncText(replica('n3')), 'in sync');
  assert.equal(syncText(replica('n3', { splitBrain: true })), 'SPLIT-BRAIN');
  assert.equal(syncText(replica('n3', { outOfSyncBytes: 2048, upToDate: false })), '2K out of sync');
  assert.equal(syncText(replica('n3', { upToDate: false })), '-');
});

const ev = (at: number, text: string, source: EventRecord['source'] = 'manager') => ({ at, text, source });

test('failovers: from a lease expiring to healthy on another node, per vserver', () => {
  const f = failoversFrom([
    ev(1000, 'n1: new -> alive'),
    ev(1000, 'web: assign to n1 with epoch 1: preferred #1'),
    ev(1500, 'db: assign to n2 with epoch 1: preferred #1'),
    ev(2000, 'web: healthy on n1'),
    ev(2100, 'db: healthy on n2'),
    ev(3000, 'web: healthy on n9', 'node'), // not the manager's: ignored
    ev(30_000, 'n1: alive -> expired'),
    ev(30_000, 'web: assign to n2 with epoch 2: preferred #2'),
    ev(31_000, 'web: starting on n2'),
    ev(34_400, 'web: healthy on n2'),
    // n2 dies in standby; db comes back on n2 itself (its node returned first): no failover.
    ev(50_000, 'n2: alive, standby -> expired, standby'),
    ev(51_000, 'n2: expired, standby -> alive, standby'),
    ev(52_000, 'db: healthy on n2'),
    ev(53_000, 'web: healthy on n3'),
  ]);
  assert.deepEqual(f, [
    { vserver: 'web', from: 'n1', to: 'n2', expiredAt: 30_000, healthyAt: 34_400, seconds: 4.4 },
    { vserver: 'web', from: 'n2', to: 'n3', expiredAt: 50_000, healthyAt: 53_000, seconds: 3 },
  ]);
  assert.deepEqual(failoversFrom([]), []);
});

test('backup now: runs where the vserver runs, once nothing of it (or the prune) is running', () => {
  const base = {
    request: { at: 5000, by: 'token adm on n1' },
    now: 6000,
    record: undefined,
    node: 'n1',
    notHere: '',
    runningHere: false,
    alive: new Set(['n1', 'n2']),
  };
  assert.deepEqual(backupNowDue(base), {
    run: true,
    dueAt: 5000,
    failures: 0,
    why: 'requested by token adm on n1',
  });
  assert.equal(backupNowDue({ ...base, request: undefined }).run, false);
  assert.deepEqual(backupNowDue({ ...base, notHere: 'runs on n2' }), { run: false, why: 'runs on n2' });
  assert.equal(backupNowDue({ ...base, runningHere: true }).run, false);
  const running = {
    version: 1 as const,
    job: 'demo',
    attempt: { node: 'n2', dueAt: 0, startedAt: 5500 },
  };
  assert.deepEqual(backupNowDue({ ...base, record: running }), { run: false, why: 'running on n2' });
  // A run on a node that died does not hold it back.
  assert.equal(backupNowDue({ ...base, record: running, alive: new Set(['n1']) }).run, true);
  const prune = { ...running, job: '@prune', attempt: { ...running.attempt, node: 'n1' } };
  assert.equal(backupNowDue({ ...base, exclusive: [prune] }).run, false);
});
