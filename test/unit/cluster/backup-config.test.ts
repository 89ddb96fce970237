import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseClusterConfig } from '../../../src/cluster/config.ts';
import { cronError, missedRun, nextRun, periodMs } from '../../../src/lib/cron.ts';

const base = (
  vserverBackup: string,
  top = 'backup: { repository: /srv/repo, password_file: /etc/cvserver/restic }',
) =>
  [
    'cluster: t',
    'nodes:',
    '  - { name: n1, addresses: [10.0.0.1] }',
    top,
    'vservers:',
    '  web:',
    '    template: busybox',
    '    command: ["/bin/sh"]',
    '    volume: { size: 64M, replicas: [n1], port: 7801 }',
    vserverBackup,
    '',
  ].join('\n');

test('backup section and a vserver schedule with retention parse', () => {
  const spec = parseClusterConfig(
    base('    backup: { schedule: "0 2 * * *", keep: { daily: 7, weekly: 4 } }'),
    'c.yaml',
  );
  assert.equal(spec.backup?.repository, '/srv/repo');
  assert.equal(spec.backup?.prune_schedule, '30 4 * * 0');
  assert.deepEqual(spec.backups.web, { schedule: '0 2 * * *', keep: { daily: 7, weekly: 4 } });
  assert.equal('backup' in (spec.vservers.web ?? {}), false, 'not part of what runs');
});

test('errors name the file, line and field', () => {
  assert.throws(
    () => parseClusterConfig(base('    backup: { schedule: "0 25 * * *", keep: { daily: 1 } }'), 'c.yaml'),
    /c\.yaml:10:\d+: vservers\.web\.backup\.schedule: "0 25 \* \* \*" is not a cron expression/,
  );
  assert.throws(
    () => parseClusterConfig(base('    backup: { schedule: "0 2 * * *", keep: { daily: 0 } }'), 'c.yaml'),
    /vservers\.web\.backup\.keep: expected at least one of last, daily, weekly, monthly above 0/,
  );
  assert.throws(
    () => parseClusterConfig(base('    backup: { schedule: "0 2 * * *", keep: { daily: 1 } }', ''), 'c.yaml'),
    /vservers\.web\.backup: a backup schedule needs the top-level backup section/,
  );
  assert.throws(
    () =>
      parseClusterConfig(base('', 'backup: { repository: /srv/repo, password_file: relative }'), 'c.yaml'),
    /backup\.password_file: expected an absolute path/,
  );
});

test('cron helpers: next run, period, a run missed while down runs once', () => {
  assert.equal(cronError('0 2 * * *'), undefined);
  assert.match(cronError('nonsense') ?? '', /is not a cron expression/);
  const at = new Date(2024, 0, 1, 1, 0, 0);
  assert.deepEqual(nextRun('0 2 * * *', at), new Date(2024, 0, 1, 2, 0, 0));
  assert.equal(periodMs('0 2 * * *', at), 24 * 3600 * 1000);
  // Down from day 1 01:00 to day 3 05:00: the runs of day 1, 2 and 3 were missed; the last one is due once.
  assert.deepEqual(missedRun('0 2 * * *', at, new Date(2024, 0, 3, 5, 0, 0)), new Date(2024, 0, 3, 2, 0, 0));
  assert.equal(missedRun('0 2 * * *', at, new Date(2024, 0, 1, 1, 30, 0)), undefined);
});
