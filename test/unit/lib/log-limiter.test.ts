import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rateLimited } from '../../../src/lib/log-limiter.ts';

test('a flood of one message is capped per window, and the rest is counted once', () => {
  const lines: Array<[string, object, string]> = [];
  const sink = {
    info: (o: object, m: string) => lines.push(['info', o, m]),
    warn: (o: object, m: string) => lines.push(['warn', o, m]),
  };
  let t = 0;
  const log = rateLimited(sink, { max: 3, windowMs: 1000, now: () => t });
  for (let i = 0; i < 100; i++) log.warn({ i }, 'replication handshake refused');
  log.info({}, 'peer link down'); // another message has its own budget
  assert.equal(lines.filter(([, , m]) => m === 'replication handshake refused').length, 3);
  assert.equal(lines.filter(([, , m]) => m === 'peer link down').length, 1);
  t = 1500;
  log.warn({ i: 100 }, 'replication handshake refused');
  const summary = lines.find(([, , m]) => m === 'suppressed: replication handshake refused');
  assert.deepEqual(summary?.[1], { suppressed: 97, windowMs: 1000 });
  assert.deepEqual(lines.at(-1)?.[1], { i: 100 });
});
