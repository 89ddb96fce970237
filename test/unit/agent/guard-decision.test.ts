import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type GuardMessage,
  guardDecision,
  guardMessageSchema,
  guardReceive,
  initialGuardState,
} from '../../../src/agent/guard.ts';

const msg = (deadline: number, containers = ['web'], volumes = ['web']): GuardMessage => ({
  deadline,
  protect: { containers, volumes },
});

test('no message yet: nothing to do, whatever the time', () => {
  const s = initialGuardState();
  assert.equal(guardDecision(s, 1e12).kill, null);
});

test('before the deadline nothing happens; at it everything protected is killed once, with the lateness', () => {
  let s = guardReceive(initialGuardState(), msg(1000));
  assert.equal(guardDecision(s, 999).kill, null);
  const d = guardDecision(s, 1030);
  assert.deepEqual(d.kill, { containers: ['web'], volumes: ['web'], deadline: 1000, lateMs: 30 });
  assert.equal(d.state.fenced, true);
  s = d.state;
  // Fenced: protects nothing until a new message.
  assert.equal(guardDecision(s, 2000).kill, null);
  assert.equal(guardDecision(s, 5000).kill, null);
});

test('a newer message moves the deadline; the latest wins even if earlier', () => {
  let s = guardReceive(initialGuardState(), msg(1000));
  s = guardReceive(s, msg(1500));
  assert.equal(guardDecision(s, 1200).kill, null);
  assert.ok(guardDecision(s, 1500).kill);
  // An agent may shorten its deadline (e.g. a slower renewal): the guard follows it.
  s = guardReceive(s, msg(1100));
  assert.ok(guardDecision(s, 1200).kill);
});

test('nothing protected: the deadline passing is no event', () => {
  const s = guardReceive(initialGuardState(), msg(1000, [], []));
  const d = guardDecision(s, 5000);
  assert.equal(d.kill, null);
  assert.equal(d.state.fenced, false);
});

test('a message after a fence arms the guard again', () => {
  let s = guardDecision(guardReceive(initialGuardState(), msg(1000)), 1001).state;
  s = guardReceive(s, msg(3000, ['db'], []));
  assert.equal(s.fenced, false);
  assert.equal(guardDecision(s, 2999).kill, null);
  assert.deepEqual(guardDecision(s, 3000).kill?.containers, ['db']);
});

test('messages are validated', () => {
  assert.ok(guardMessageSchema.safeParse(msg(1)).success);
  assert.ok(
    !guardMessageSchema.safeParse({ deadline: 'soon', protect: { containers: [], volumes: [] } }).success,
  );
  assert.ok(!guardMessageSchema.safeParse({ deadline: 1 }).success);
  assert.ok(!guardMessageSchema.safeParse({ ...msg(1), extra: true }).success);
});
