import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  applyResult,
  type HealthState,
  initialHealth,
  nextProbeAt,
} from '../../../src/vserver/health-state.ts';
import { decideRestart } from '../../../src/vserver/restart-policy.ts';
import { nextStopStep } from '../../../src/vserver/stop-sequence.ts';

test('health: failures in the start period do not count, then retries consecutive failures', () => {
  const params = { retries: 3, startPeriodMs: 10_000 };
  let s: HealthState = initialHealth(0);
  const feed = (ok: boolean, at: number) => {
    const out = applyResult(s, params, { ok, at, detail: ok ? 'ok' : 'refused' });
    s = out.state;
    return out.transition;
  };
  for (const t of [1000, 2000, 9000]) assert.equal(feed(false, t), undefined);
  assert.equal(s.status, 'starting');
  assert.equal(feed(false, 11_000), undefined);
  assert.equal(feed(false, 12_000), undefined);
  const tr = feed(false, 13_000);
  assert.deepEqual(tr, {
    from: 'starting',
    to: 'unhealthy',
    reason: '3 consecutive failures, last: refused',
  });
  assert.equal(feed(false, 14_000), undefined, 'no repeated transition');
  assert.equal(feed(true, 15_000)?.to, 'healthy');
});

test('health: a success resets the failure count', () => {
  const params = { retries: 2, startPeriodMs: 0 };
  let s = applyResult(initialHealth(0), params, { ok: true, at: 1, detail: 'ok' }).state;
  s = applyResult(s, params, { ok: false, at: 2, detail: 'x' }).state;
  s = applyResult(s, params, { ok: true, at: 3, detail: 'ok' }).state;
  const out = applyResult(s, params, { ok: false, at: 4, detail: 'x' });
  assert.equal(out.state.status, 'healthy');
  assert.equal(out.state.failures, 1);
});

test('restart policy: at most N in a sliding window (simulated time)', () => {
  const p = { policy: 'on-failure' as const, maxRestarts: 2, windowMs: 60_000 };
  assert.equal(decideRestart(p, [], 0).restart, true);
  assert.equal(decideRestart(p, [0], 1000).restart, true);
  const refused = decideRestart(p, [0, 1000], 2000);
  assert.equal(refused.restart, false);
  assert.match(refused.reason, /2 restarts in the last 60s/);
  assert.equal(decideRestart(p, [0, 1000], 60_500).restart, true, 'the first left the window');
  assert.equal(decideRestart({ ...p, policy: 'no' }, [], 0).restart, false);
});

test('stop sequence: signal, wait until the timeout, kill, fail if still there', () => {
  const base = { signalled: false, killed: false, running: true, elapsedMs: 0, timeoutMs: 2000 };
  assert.equal(nextStopStep(base).action, 'signal');
  assert.equal(nextStopStep({ ...base, signalled: true, elapsedMs: 1999 }).action, 'wait');
  assert.equal(nextStopStep({ ...base, signalled: true, elapsedMs: 2000 }).action, 'kill');
  assert.equal(nextStopStep({ ...base, signalled: true, killed: true, elapsedMs: 3000 }).action, 'wait');
  assert.equal(nextStopStep({ ...base, signalled: true, killed: true, elapsedMs: 8000 }).action, 'fail');
  assert.equal(nextStopStep({ ...base, running: false }).action, 'done');
});

test('probes every start_interval until the first success within the start period, then every interval', () => {
  const check = { interval: 1000, start_period: 5000, start_interval: 200 };
  const s0 = initialHealth(0);
  assert.equal(nextProbeAt(s0, 100, check), 300);
  // The start period is over: the normal interval.
  assert.equal(nextProbeAt(s0, 5000, check), 6000);
  const up = applyResult(s0, { retries: 3, startPeriodMs: 5000 }, { ok: true, at: 400, detail: 'ok' }).state;
  assert.equal(up.status, 'healthy');
  assert.equal(nextProbeAt(up, 400, check), 1400);
  // Without start_interval, always the interval.
  assert.equal(nextProbeAt(s0, 100, { interval: 1000, start_period: 5000 }), 1100);
});
