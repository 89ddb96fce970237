import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type AssignmentTable, applyCommands } from '../../../src/cluster/assignments.ts';
import type { Command } from '../../../src/cluster/types.ts';

const assign = (vserver: string, node: string, epoch: number): Command => ({
  kind: 'assign',
  vserver,
  node,
  epoch,
  reason: 'r',
});
const restart = (vserver: string, node: string, epoch: number): Command => ({
  kind: 'restart',
  vserver,
  node,
  epoch,
  reason: 'r',
});
const stop = (vserver: string, node: string): Command => ({ kind: 'stop', vserver, node, reason: 'r' });

const table: Array<[string, AssignmentTable, Command[], AssignmentTable]> = [
  ['assign to an empty table', {}, [assign('web', 'n1', 1)], { web: { node: 'n1', epoch: 1, restarts: 0 } }],
  [
    'a new assignment replaces the old one and resets restarts',
    { web: { node: 'n1', epoch: 1, restarts: 2 } },
    [assign('web', 'n2', 2)],
    { web: { node: 'n2', epoch: 2, restarts: 0 } },
  ],
  [
    'restart counts up on the same node and epoch',
    { web: { node: 'n1', epoch: 1, restarts: 0 } },
    [restart('web', 'n1', 1), restart('web', 'n1', 1)],
    { web: { node: 'n1', epoch: 1, restarts: 2 } },
  ],
  [
    'a restart for another node or epoch is ignored',
    { web: { node: 'n1', epoch: 2, restarts: 0 } },
    [restart('web', 'n2', 2), restart('web', 'n1', 1), restart('db', 'n1', 1)],
    { web: { node: 'n1', epoch: 2, restarts: 0 } },
  ],
  [
    'stop on the assigned node removes it',
    { web: { node: 'n1', epoch: 1, restarts: 0 } },
    [stop('web', 'n1')],
    {},
  ],
  [
    'stop of a stray copy leaves the table alone',
    { web: { node: 'n2', epoch: 2, restarts: 0 } },
    [stop('web', 'n1')],
    { web: { node: 'n2', epoch: 2, restarts: 0 } },
  ],
  [
    'mark changes nothing',
    { web: { node: 'n1', epoch: 1, restarts: 0 } },
    [{ kind: 'mark', vserver: 'web', status: 'failed', reason: 'r' }],
    { web: { node: 'n1', epoch: 1, restarts: 0 } },
  ],
  [
    'commands apply in order: stop then assign elsewhere',
    { web: { node: 'n1', epoch: 1, restarts: 0 }, db: { node: 'n2', epoch: 4, restarts: 0 } },
    [stop('web', 'n1'), assign('web', 'n3', 2)],
    { web: { node: 'n3', epoch: 2, restarts: 0 }, db: { node: 'n2', epoch: 4, restarts: 0 } },
  ],
];

for (const [name, before, commands, after] of table)
  test(`applyCommands: ${name}`, () => {
    const frozen = JSON.stringify(before);
    assert.deepEqual(applyCommands(before, commands), after);
    assert.equal(JSON.stringify(before), frozen, 'input not modified');
  });
