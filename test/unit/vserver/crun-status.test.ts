import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { runningFromStatusFile } from '../../../src/vserver/crun.ts';

const root = mkdtempSync(join(tmpdir(), 'cvs-crun-'));
after(() => rmSync(root, { recursive: true, force: true }));

function status(id: string, body: unknown): void {
  mkdirSync(join(root, id), { recursive: true });
  writeFileSync(join(root, id, 'status'), typeof body === 'string' ? body : JSON.stringify(body));
}

test("crun's status file: running only for a live pid with the recorded start time", () => {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  status('live', { pid: process.pid, 'process-start-time': start });
  status('reused', { pid: process.pid, 'process-start-time': start + 1 });
  status('gone', { pid: 2 ** 22 + 7, 'process-start-time': 1 });
  status('garbled', 'not json');
  status('other-format', { pid: 'x' });
  assert.equal(runningFromStatusFile(root, 'live'), true);
  assert.equal(runningFromStatusFile(root, 'reused'), false);
  assert.equal(runningFromStatusFile(root, 'gone'), false);
  assert.equal(runningFromStatusFile(root, 'garbled'), undefined);
  assert.equal(runningFromStatusFile(root, 'other-format'), undefined);
  assert.equal(runningFromStatusFile(root, 'absent'), undefined);
});
