import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ActionExecutor } from '../../../src/agent/executor.ts';

test("a vserver's actions run one after another; outcomes come back as node events", async () => {
  const trace: string[] = [];
  const slow = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const ex = new ActionExecutor({
    start: async (v, epoch) => {
      trace.push(`start ${v} ${epoch} begin`);
      await slow(30);
      if (v === 'bad') throw new Error('no disk');
      trace.push(`start ${v} ${epoch} end`);
    },
    restart: async () => {},
    stop: async (v, hard) => {
      trace.push(`stop ${v} ${hard}`);
      if (v === 'stuck') throw new Error('unmount hangs');
    },
  });
  ex.submit({ kind: 'start', vserver: 'web', epoch: 2, reason: 'assigned' });
  ex.submit({ kind: 'stop', vserver: 'web', hard: true, reason: 'fenced' });
  ex.submit({ kind: 'start', vserver: 'bad', epoch: 1, reason: 'assigned' });
  ex.submit({ kind: 'stop', vserver: 'stuck', hard: false, reason: 'moved' });
  assert.ok(ex.busy('web'));
  await ex.idle();
  assert.ok(!ex.busy('web'));
  // The stop of web waited for its start.
  assert.ok(trace.indexOf('stop web true') > trace.indexOf('start web 2 end'));
  const outcomes = ex.drain().map((e) => JSON.stringify(e));
  assert.deepEqual(outcomes.sort(), [
    JSON.stringify({ kind: 'start-failed', vserver: 'bad', error: 'no disk' }),
    JSON.stringify({ kind: 'started', vserver: 'web', epoch: 2 }),
    JSON.stringify({ kind: 'stop-failed', vserver: 'stuck', error: 'unmount hangs' }),
    JSON.stringify({ kind: 'stopped', vserver: 'web' }),
  ]);
  assert.deepEqual(ex.drain(), []);
});
