import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  checkAssignment,
  checkEpochs,
  checkLeaseCoversRunning,
  checkNoDeadOwner,
  checkSingleWriter,
} from '../../../src/cluster/invariants.ts';
import { emptyState } from '../../../src/cluster/manager.ts';
import type { Command, Observation } from '../../../src/cluster/types.ts';

test('checkSingleWriter: one node per vserver', () => {
  const snap = (b: string[]) => ({
    now: 5,
    nodes: [
      { name: 'n1', active: ['web'], leaseUntil: 10 },
      { name: 'n2', active: b, leaseUntil: 10 },
    ],
  });
  assert.deepEqual(checkSingleWriter(snap(['db'])), []);
  assert.deepEqual(checkSingleWriter(snap(['db', 'web'])), ['web running on n1 and n2']);
});

test('checkLeaseCoversRunning: nothing runs once the lease could have ended', () => {
  const snap = (now: number, leaseUntil: number | null, active = ['web']) => ({
    now,
    nodes: [{ name: 'n1', active, leaseUntil }],
  });
  assert.deepEqual(checkLeaseCoversRunning(snap(9.9, 10)), []);
  assert.deepEqual(checkLeaseCoversRunning(snap(10, 10)), ['n1 runs web at 10 but its lease ends at 10']);
  assert.deepEqual(checkLeaseCoversRunning(snap(3, null)), ['n1 runs web without a lease']);
  assert.deepEqual(checkLeaseCoversRunning(snap(30, 10, [])), []);
});

const obs: Observation = {
  maintenance: false,
  nodes: [
    { name: 'n1', lease: 'alive', standby: false },
    { name: 'n2', lease: 'expired', standby: false },
    { name: 'n3', lease: 'alive', standby: true },
  ],
  vservers: [
    {
      name: 'web',
      desired: 'started',
      preferred: [],
      avoid: [],
      antiAffinity: [],
      upToDate: ['n1', 'n2', 'n3'],
      stale: [],
      reports: {},
    },
    {
      name: 'db',
      desired: 'started',
      preferred: [],
      avoid: [],
      antiAffinity: [],
      upToDate: ['n2'],
      stale: ['n1'],
      reports: {},
    },
  ],
};
const assign = (vserver: string, node: string, epoch = 1): Command => ({
  kind: 'assign',
  vserver,
  node,
  epoch,
  reason: 'r',
});

test('checkAssignment: alive, not in standby, up-to-date replica', () => {
  assert.deepEqual(checkAssignment(obs, [assign('web', 'n1')]), []);
  assert.deepEqual(checkAssignment(obs, [assign('web', 'n2'), assign('web', 'n3'), assign('db', 'n1')]), [
    'web assigned to n2 whose lease is expired or in standby',
    'web assigned to n3 whose lease is alive or in standby',
    'db assigned to n1 without an up-to-date replica',
  ]);
});

test('checkEpochs: strictly increasing per vserver', () => {
  const a = checkEpochs({}, [assign('web', 'n1', 1), assign('db', 'n1', 1)]);
  assert.deepEqual(a, { highest: { web: 1, db: 1 }, violations: [] });
  const b = checkEpochs(a.highest, [assign('web', 'n2', 1)]);
  assert.deepEqual(b.violations, ['web epoch 1 not above 1']);
  assert.deepEqual(a.highest, { web: 1, db: 1 }, 'input not modified');
});

test('checkNoDeadOwner: nothing stays on an expired node, except in maintenance', () => {
  const state = emptyState();
  state.vservers.web = {
    node: 'n2',
    epoch: 1,
    assignedAt: 0,
    stopping: null,
    migrateTo: null,
    failures: [],
    relocations: [],
    handledFailure: -1,
    failed: null,
    lastStatus: '',
    lastWait: '',
    strayStops: {},
  };
  assert.deepEqual(checkNoDeadOwner(obs, state), ['web still assigned to n2 whose lease is expired']);
  assert.deepEqual(checkNoDeadOwner({ ...obs, maintenance: true }, state), []);
});
