import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inStateDir } from '../../../src/agent/resources/state-dir-scope.ts';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('operations on one state dir overlap; another dir waits until they are done and sees its own dir', async () => {
  const saved = process.env.CVSERVER_STATE_DIR;
  const log: string[] = [];
  const op = (dir: string, id: string, ms: number) =>
    inStateDir(dir, async () => {
      log.push(`${id} in ${process.env.CVSERVER_STATE_DIR}`);
      await tick(ms);
      assert.equal(process.env.CVSERVER_STATE_DIR, dir);
      log.push(`${id} out`);
    });
  try {
    await Promise.all([op('/a', 'a1', 30), op('/a', 'a2', 10), op('/b', 'b1', 5), op('/a', 'a3', 5)]);
  } finally {
    if (saved === undefined) delete process.env.CVSERVER_STATE_DIR;
    else process.env.CVSERVER_STATE_DIR = saved;
  }
  // a1 and a2 overlap; b1 runs only once no /a operation is left.
  assert.deepEqual(log.slice(0, 2), ['a1 in /a', 'a2 in /a']);
  const b = log.indexOf('b1 in /b');
  assert.ok(b > log.indexOf('a1 out') && b > log.indexOf('a2 out'), log.join(', '));
});
