import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type FoundVserver, planAdoption } from '../../../src/cluster/adoption.ts';
import type { AssignmentTable } from '../../../src/cluster/assignments.ts';
import { emptyLocal, nodeStep } from '../../../src/cluster/node.ts';

const found = (o: Partial<FoundVserver> = {}): FoundVserver => ({
  vserver: 'web',
  running: true,
  primary: true,
  epoch: 3,
  healthy: true,
  ...o,
});
const table: AssignmentTable = { web: { node: 'n1', epoch: 3, restarts: 1 } };

test('adoption decision table', () => {
  const cases: {
    name: string;
    f: FoundVserver;
    table: AssignmentTable | null;
    lease: boolean;
    want: string;
  }[] = [
    {
      name: 'running, assigned here, same epoch, lease valid',
      f: found(),
      table,
      lease: true,
      want: 'adopt healthy',
    },
    { name: 'not healthy yet', f: found({ healthy: false }), table, lease: true, want: 'adopt running' },
    { name: 'lease ended', f: found(), table, lease: false, want: 'stop lease has ended' },
    { name: 'table unread', f: found(), table: null, lease: true, want: 'stop could not be read' },
    {
      name: 'assigned elsewhere',
      f: found(),
      table: { web: { node: 'n2', epoch: 4, restarts: 0 } },
      lease: true,
      want: 'stop assigned to n2',
    },
    { name: 'removed from the table', f: found(), table: {}, lease: true, want: 'stop assigned to no node' },
    {
      name: 'older epoch',
      f: found({ epoch: 2 }),
      table,
      lease: true,
      want: 'stop epoch 2, the assignment 3',
    },
    {
      name: 'primary, container gone',
      f: found({ running: false }),
      table,
      lease: true,
      want: 'stop container does not run',
    },
    { name: 'nothing runs', f: found({ running: false, primary: false }), table, lease: true, want: 'none' },
  ];
  for (const c of cases) {
    const p = planAdoption('n1', [c.f], c.table, c.lease, 10);
    const got = p.vservers.web
      ? `adopt ${p.vservers.web.status}`
      : p.stop[0]
        ? `stop ${p.stop[0].reason}`
        : 'none';
    const [verb, ...rest] = c.want.split(' ');
    assert.ok(
      got.startsWith(verb!) && got.includes(rest.join(' ')),
      `${c.name}: got "${got}", want "${c.want}"`,
    );
    assert.equal(p.log.length, c.want === 'none' ? 0 : 1, `${c.name}: one log line per vserver found`);
  }
});

test('an adopted vserver keeps the table epoch and restart count, so the node step does nothing to it', () => {
  const p = planAdoption('n1', [found()], table, true, 42);
  assert.deepEqual(p.vservers.web, { status: 'healthy', since: 42, epoch: 3, restarts: 1 });
  assert.deepEqual(p.stop, []);
});

test('the node step after an adoption: no start, no stop; it fences as usual if no renewal follows', () => {
  const p = planAdoption('n1', [found()], table, true, 100);
  const local = { ...emptyLocal('n1'), vservers: p.vservers };
  const timing = { leaseTtl: 2, fenceMargin: 0.5 };
  const r = nodeStep(
    local,
    [
      { kind: 'renewed', sentAt: 100 },
      { kind: 'assignments', table },
    ],
    100,
    timing,
  );
  assert.deepEqual(r.actions, []);
  assert.equal(r.reports.web?.status, 'healthy');
  const later = nodeStep(r.local, [], 101.6, timing);
  assert.deepEqual(
    later.actions.map((a) => a.kind),
    ['stop'],
  );
});
