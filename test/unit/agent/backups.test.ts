import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  type BackupTick,
  backupStatusOf,
  CLUSTER_JOB,
  PRUNE_JOB,
  planJobs,
} from '../../../src/agent/backups.ts';
import { parseClusterConfig } from '../../../src/cluster/config.ts';
import { emptyLocal } from '../../../src/cluster/node.ts';

const file = join(import.meta.dirname, '../../fixtures/cluster/three-nodes.yaml');
const base = readFileSync(file, 'utf8');
const name = Object.keys(parseClusterConfig(base, file).vservers)[0]!;
const withBackups = parseClusterConfig(
  base
    .replace(/^vservers:/m, 'backup:\n  repository: /srv/r\n  password_file: /etc/pw\nvservers:')
    .replace(
      new RegExp(`^  ${name}:$`, 'm'),
      `  ${name}:\n    backup: { schedule: "0 2 * * *", keep: { daily: 3 } }`,
    ),
  file,
);

function tick(o: Partial<BackupTick> & { assigned?: string; status?: 'healthy' | 'starting' }): BackupTick {
  const local = emptyLocal('n1');
  local.table = o.assigned ? { [name]: { node: o.assigned, epoch: 1, restarts: 0 } } : {};
  if (o.status) local.vservers[name] = { status: o.status, epoch: 1, since: 0, restarts: 0 };
  return {
    spec: withBackups,
    snapshot: undefined,
    local,
    lease: '7',
    isManager: false,
    timeoutMs: 100,
    ...o,
  };
}

test('jobs: the vserver backup where it runs, the cluster state and the prune on the manager', () => {
  const here = planJobs(tick({ assigned: 'n1', status: 'healthy' }), 'n1');
  assert.deepEqual(
    here.map((j) => [j.job, j.notHere]),
    [
      [name, ''],
      [CLUSTER_JOB, 'not the manager'],
      [PRUNE_JOB, 'not the manager'],
    ],
  );
  assert.deepEqual(here[0]!.args, ['backup', 'run', name, '--json']);
  assert.deepEqual(here[2]!.exclusive, [name, CLUSTER_JOB]);
  const elsewhere = planJobs(tick({ assigned: 'n2', isManager: true }), 'n1');
  assert.deepEqual(
    elsewhere.map((j) => [j.job, j.notHere]),
    [
      [name, 'runs on n2'],
      [CLUSTER_JOB, ''],
      [PRUNE_JOB, ''],
    ],
  );
  assert.deepEqual(planJobs(tick({ spec: { ...withBackups, backup: undefined } }), 'n1'), []);
});

test('status of a job: last success, a failure after it, late after twice the period', () => {
  const day = 86_400_000;
  const ok = {
    node: 'n1',
    dueAt: 0,
    startedAt: 10,
    finishedAt: 20,
    ok: true,
    bytesAdded: 5,
    seconds: 1,
    snapshotId: 'ab',
  };
  const failed = {
    node: 'n2',
    dueAt: day,
    startedAt: day,
    finishedAt: day + 5,
    ok: false,
    error: 'restic: boom',
  };
  const s = backupStatusOf(
    '0 2 * * *',
    { version: 1, job: name, attempt: failed, lastSuccess: ok },
    0,
    day + 10,
  );
  assert.deepEqual(s.lastSuccess, { at: 20, bytesAdded: 5, seconds: 1, snapshotId: 'ab', node: 'n1' });
  assert.equal(s.lastError, 'restic: boom');
  assert.equal(s.running, null);
  assert.equal(s.late, false);
  assert.equal(
    backupStatusOf('0 2 * * *', { version: 1, job: name, attempt: failed, lastSuccess: ok }, 0, 3 * day).late,
    true,
  );
  const never = backupStatusOf('0 2 * * *', undefined, 0, day);
  assert.equal(never.lastSuccess, null);
  assert.equal(never.late, false);
});
