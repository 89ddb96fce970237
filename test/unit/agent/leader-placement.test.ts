import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leaderMove, type MemberView } from '../../../src/agent/leader-placement.ts';

const m = (node: string, id: string, healthy = true, witness = false): MemberView => ({
  node,
  id,
  healthy,
  witness,
});

test('the leader moves off a node that runs vservers, to an idle healthy one (a witness last)', () => {
  const members = [m('n1', '1'), m('n2', '2'), m('w', '3', true, true)];
  assert.equal(leaderMove('1', members, { n1: 1 })?.to.node, 'n2');
  assert.equal(leaderMove('1', members, { n1: 1, n2: 1 })?.to.node, 'w');
  assert.match(leaderMove('1', members, { n1: 2 })!.reason, /n1 runs 2 vserver/);
});

test('it stays when its node runs nothing, when no better healthy member exists, or when the leader is unknown', () => {
  const members = [m('n1', '1'), m('n2', '2', false), m('n3', '3')];
  assert.equal(leaderMove('1', members, {}), undefined);
  assert.equal(leaderMove('1', members, { n1: 1, n3: 1 }), undefined);
  assert.equal(leaderMove('9', members, { n1: 1 }), undefined);
});

test('a node in standby (being emptied, maybe removed) is never given the leadership', () => {
  const members = [m('n1', '1'), m('n2', '2'), m('n3', '3')];
  assert.equal(leaderMove('1', members, { n1: 1 }, { draining: ['n2'] })?.to.node, 'n3');
  assert.equal(leaderMove('1', members, { n1: 1 }, { draining: ['n2', 'n3'] }), undefined);
});

test("the leader leaves the manager's node for one that runs nothing and does not manage", () => {
  const members = [m('n1', '1'), m('n2', '2'), m('n3', '3')];
  // n2 manages, n3 runs the demo: n1 leads.
  assert.equal(leaderMove('2', members, { n3: 1 }, { manager: 'n2' })?.to.node, 'n1');
  assert.match(leaderMove('2', members, { n3: 1 }, { manager: 'n2' })!.reason, /n2 runs the manager/);
  // No such node: it stays on the manager's (rather than on a node that runs vservers).
  assert.equal(leaderMove('2', members, { n1: 1, n3: 1 }, { manager: 'n2' }), undefined);
  assert.equal(leaderMove('1', members, { n3: 1 }, { manager: 'n2' }), undefined);
  // Off a node that runs vservers: one that does not manage first, else the manager's.
  assert.equal(leaderMove('3', members, { n3: 1 }, { manager: 'n1' })?.to.node, 'n2');
  assert.equal(leaderMove('3', members, { n2: 1, n3: 1 }, { manager: 'n1' })?.to.node, 'n1');
});

test('two full nodes and a witness: the idle full node leads, even when it manages; the witness only if nothing else', () => {
  const members = [m('n1', '1'), m('n2', '2'), m('w', '3', true, true)];
  // The demo on n2, the manager on n1: losing the witness must change nothing, so n1 leads.
  assert.equal(leaderMove('3', members, { n2: 1 }, { manager: 'n1' })?.to.node, 'n1');
  assert.match(leaderMove('3', members, { n2: 1 }, { manager: 'n1' })!.reason, /w is a witness/);
  assert.equal(leaderMove('1', members, { n2: 1 }, { manager: 'n1' }), undefined);
  assert.equal(leaderMove('2', members, { n2: 1 }, { manager: 'n1' })?.to.node, 'n1');
  // Both full nodes run vservers: the witness.
  assert.equal(leaderMove('1', members, { n1: 1, n2: 1 }, { manager: 'n1' })?.to.node, 'w');
});
