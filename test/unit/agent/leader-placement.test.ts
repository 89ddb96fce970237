import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leaderMove, type MemberView } from '../../../src/agent/leader-placement.ts';

const m = (node: string, id: string, healthy = true, witness = false): MemberView => ({
  node,
  id,
  healthy,
  witness,
});

test('the leader moves off a node that runs vservers, to an idle healthy one (a witness first)', () => {
  const members = [m('n1', '1'), m('n2', '2'), m('w', '3', true, true)];
  assert.equal(leaderMove('1', members, { n1: 1 })?.to.node, 'w');
  assert.equal(leaderMove('1', members.slice(0, 2), { n1: 1 })?.to.node, 'n2');
  assert.match(leaderMove('1', members, { n1: 2 })!.reason, /n1 runs 2 vserver/);
});

test('it stays when its node runs nothing, when no idle healthy member exists, or when the leader is unknown', () => {
  const members = [m('n1', '1'), m('n2', '2', false), m('n3', '3')];
  assert.equal(leaderMove('1', members, {}), undefined);
  assert.equal(leaderMove('1', members, { n1: 1, n3: 1 }), undefined);
  assert.equal(leaderMove('9', members, { n1: 1 }), undefined);
});

test('a node in standby (being emptied, maybe removed) is never given the leadership', () => {
  const members = [m('n1', '1'), m('n2', '2'), m('n3', '3')];
  assert.equal(leaderMove('1', members, { n1: 1 }, ['n2'])?.to.node, 'n3');
  assert.equal(leaderMove('1', members, { n1: 1 }, ['n2', 'n3']), undefined);
});
