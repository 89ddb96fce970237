import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  describeStatus,
  explainFailure,
  parseResticLine,
  tagsFor,
  tagValue,
} from '../../../src/backup/restic.ts';

const repo = { repository: '/srv/repo', passwordFile: '/etc/pw' };

test('restic failures become one clear line naming the repository', () => {
  assert.equal(
    explainFailure(repo, 'Fatal: wrong password or no key found\n', 'x'),
    'backup repository /srv/repo: wrong password (backup.password_file /etc/pw)',
  );
  assert.match(
    explainFailure(
      repo,
      'Fatal: unable to open config file: stat /srv/repo/config: no such file or directory\nIs there a repository at the following location?\n/srv/repo\n',
      'x',
    ),
    /^backup repository \/srv\/repo: no repository there, or it cannot be reached/,
  );
  assert.equal(
    explainFailure(repo, 'Fatal: something else\n', 'restic backup'),
    'restic backup failed: Fatal: something else',
  );
});

test('progress lines: files, bytes, rate, ETA', () => {
  const m = parseResticLine(
    '{"message_type":"status","percent_done":0.5,"total_files":10,"files_done":5,"total_bytes":2000,"bytes_done":1000,"seconds_elapsed":2,"seconds_remaining":2}',
  );
  assert.equal(m?.message_type, 'status');
  if (m?.message_type !== 'status') return;
  assert.equal(
    describeStatus(m, (n) => `${n}B`),
    '50%, 5/10 files, 1000B/2000B, 500B/s, ETA 2 s',
  );
  assert.equal(parseResticLine('not json'), undefined);
  assert.equal(parseResticLine('{"broken'), undefined);
});

test('tags carry the vserver, the volume UUID and size', () => {
  const tags = tagsFor('web', 'u-1', 4096);
  assert.equal(tagValue(tags, 'vserver'), 'web');
  assert.equal(tagValue(tags, 'volume'), 'u-1');
  assert.equal(tagValue(tags, 'size'), '4096');
  assert.equal(tagValue(tags, 'nope'), undefined);
});
