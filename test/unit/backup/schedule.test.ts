import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BackupRecord, BackupRun } from '../../../src/agent/records.ts';
import {
  backupDue,
  backupLate,
  type DueInput,
  MAX_FAILURES,
  managerJobPlace,
  RETRY_AFTER_MS,
  STALE_RUN_MS,
  vserverBackupPlace,
} from '../../../src/backup/schedule.ts';
import { lastRun } from '../../../src/lib/cron.ts';

const t = (s: string) => Date.parse(`2026-03-10T${s}Z`);
const HOURLY = '0 * * * *';

function rec(attempt: Partial<BackupRun>, lastSuccess?: Partial<BackupRun>): BackupRecord {
  const run = (r: Partial<BackupRun>): BackupRun => ({ node: 'n1', dueAt: 0, startedAt: 0, ...r });
  return {
    version: 1,
    job: 'web',
    attempt: run(attempt),
    ...(lastSuccess ? { lastSuccess: run(lastSuccess) } : {}),
  };
}

const base: DueInput = {
  schedule: HOURLY,
  now: t('10:20:00'),
  record: undefined,
  since: t('08:30:00'),
  node: 'n1',
  notHere: '',
  runningHere: false,
  alive: new Set(['n1', 'n2', 'n3']),
};

const ok10 = { dueAt: t('10:00:00'), startedAt: t('10:00:01'), finishedAt: t('10:01:00'), ok: true };

test('lastRun: the schedule time at or before now, at whole seconds too', () => {
  assert.equal(lastRun(HOURLY, new Date(t('10:20:00')))?.getTime(), t('10:00:00'));
  assert.equal(lastRun(HOURLY, new Date(t('10:00:00')))?.getTime(), t('10:00:00'));
  assert.equal(lastRun('*/15 * * * * *', new Date(t('10:00:29.999')))?.getTime(), t('10:00:15'));
  assert.equal(lastRun('*/15 * * * * *', new Date(t('10:00:30.000')))?.getTime(), t('10:00:30'));
});

const cases: { name: string; input: Partial<DueInput>; want: boolean | number; why?: RegExp }[] = [
  { name: 'never ran: the first time after the configuration was applied', input: {}, want: t('10:00:00') },
  {
    name: 'never ran, applied after the last time: waits for the next',
    input: { since: t('10:05:00') },
    want: false,
    why: /done for/,
  },
  { name: 'ran for the last time: nothing to do', input: { record: rec(ok10, ok10) }, want: false },
  {
    name: 'cluster down for hours (last success 07:00): one run, for the latest time only',
    input: { record: rec({ ...ok10, dueAt: t('07:00:00') }, { ...ok10, dueAt: t('07:00:00') }) },
    want: t('10:00:00'),
  },
  {
    name: 'ran on another node before a failover: not again here',
    input: { record: rec({ ...ok10, node: 'n2' }, { ...ok10, node: 'n2' }), alive: new Set(['n1', 'n3']) },
    want: false,
  },
  {
    name: 'not assigned here: another node runs it',
    input: { notHere: 'runs on n2' },
    want: false,
    why: /runs on n2/,
  },
  { name: 'running here now', input: { runningHere: true }, want: false, why: /running here/ },
  {
    name: 'in progress on a live node: waits',
    input: { record: rec({ node: 'n2', dueAt: t('10:00:00'), startedAt: t('10:00:01') }) },
    want: false,
    why: /running on n2/,
  },
  {
    name: 'in progress on a node whose lease ended (died mid-backup): run again here',
    input: {
      record: rec(
        { node: 'n2', dueAt: t('10:00:00'), startedAt: t('10:00:01') },
        { ...ok10, dueAt: t('09:00:00') },
      ),
      alive: new Set(['n1', 'n3']),
    },
    want: t('10:00:00'),
  },
  {
    name: 'in progress on a live node for longer than STALE_RUN_MS: taken for lost',
    input: {
      now: t('10:00:01') + STALE_RUN_MS + 1,
      record: rec({ node: 'n2', dueAt: t('10:00:00'), startedAt: t('10:00:01') }),
    },
    want: t('10:00:00') + STALE_RUN_MS,
  },
  {
    name: 'this agent restarted under its own run: run again',
    input: { record: rec({ node: 'n1', dueAt: t('10:00:00'), startedAt: t('10:00:01') }) },
    want: t('10:00:00'),
  },
  {
    name: 'failed a moment ago: retried only after a pause',
    input: { record: rec({ ...ok10, ok: false, finishedAt: t('10:19:30') }) },
    want: false,
    why: /retry of/,
  },
  {
    name: 'failed a while ago: retried for the same time',
    input: { record: rec({ ...ok10, ok: false, finishedAt: t('10:20:00') - RETRY_AFTER_MS }) },
    want: t('10:00:00'),
  },
  {
    name: 'failed MAX_FAILURES times: waits for the next time',
    input: { record: rec({ ...ok10, ok: false, failures: MAX_FAILURES - 1 }) },
    want: false,
  },
  {
    name: 'failed for an older time: the new time runs',
    input: { record: rec({ ...ok10, dueAt: t('09:00:00'), ok: false, failures: 2 }) },
    want: t('10:00:00'),
  },
  {
    name: 'the prune holds the repository (live node): waits',
    input: {
      exclusive: [{ ...rec({ node: 'n3', dueAt: t('10:00:00'), startedAt: t('10:10:00') }), job: '@prune' }],
    },
    want: false,
    why: /waiting for @prune on n3/,
  },
  {
    name: 'a prune that ended does not hold anything',
    input: { exclusive: [{ ...rec(ok10), job: '@prune' }] },
    want: t('10:00:00'),
  },
];

for (const c of cases)
  test(`backupDue: ${c.name}`, () => {
    const d = backupDue({ ...base, ...c.input });
    if (typeof c.want === 'number') {
      assert.ok(d.run, `expected a run, got: ${d.why}`);
      assert.equal(new Date(d.dueAt).toISOString(), new Date(c.want).toISOString());
    } else assert.equal(d.run, false, d.why);
    if (c.why) assert.match(d.why, c.why);
  });

test('a retry counts its failures, an abandoned run counts as one', () => {
  const d = backupDue({
    ...base,
    record: rec({ ...ok10, ok: false, failures: 1, finishedAt: t('10:01:00') }),
  });
  assert.ok(d.run && d.failures === 2, JSON.stringify(d));
  const e = backupDue({
    ...base,
    record: rec({ node: 'n1', dueAt: t('10:00:00'), startedAt: t('10:00:01') }),
  });
  assert.ok(e.run && e.failures === 1, JSON.stringify(e));
});

test('where a vserver backup runs: the node it is assigned to and runs on, with a lease', () => {
  const at = { node: 'n1', assignedTo: 'n1', status: 'healthy', fenced: false, hasLease: true };
  assert.equal(vserverBackupPlace(at), '');
  assert.equal(vserverBackupPlace({ ...at, status: 'running' }), '');
  assert.equal(vserverBackupPlace({ ...at, assignedTo: 'n2' }), 'runs on n2');
  assert.equal(vserverBackupPlace({ ...at, assignedTo: undefined }), 'assigned nowhere');
  assert.match(vserverBackupPlace({ ...at, status: 'starting' }), /not running here/);
  assert.match(vserverBackupPlace({ ...at, status: undefined }), /not running here \(absent\)/);
  assert.match(vserverBackupPlace({ ...at, fenced: true }), /lease/);
  assert.match(vserverBackupPlace({ ...at, hasLease: false }), /lease/);
  assert.equal(managerJobPlace({ isManager: true, fenced: false }), '');
  assert.equal(managerJobPlace({ isManager: false, fenced: false }), 'not the manager');
});

test('late: the last success older than twice the period', () => {
  const h = 3600_000;
  assert.equal(backupLate({ lastSuccessAt: 0, since: 0, periodMs: h, now: 2 * h }), false);
  assert.equal(backupLate({ lastSuccessAt: 0, since: 0, periodMs: h, now: 2 * h + 1 }), true);
  assert.equal(backupLate({ lastSuccessAt: undefined, since: 5 * h, periodMs: h, now: 6 * h }), false);
  assert.equal(backupLate({ lastSuccessAt: undefined, since: 0, periodMs: h, now: 6 * h }), true);
});
