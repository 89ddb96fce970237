import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { emptyState, step } from '../../../src/cluster/manager.ts';
import type { Observation, Policy } from '../../../src/cluster/types.ts';
import { UserError } from '../../../src/lib/errors.ts';
import { diffLines } from '../../../src/sim/run-folder.ts';
import { clusterSchema, loadScenario, parseCommands } from '../../../src/sim/scenario.ts';

const policy: Policy = { max_restarts: 1, max_relocations: 1, failure_timeout: 300, failback: false };
const obs: Observation = {
  maintenance: false,
  nodes: [
    { name: 'n1', lease: 'alive', standby: false },
    { name: 'n2', lease: 'expired', standby: false },
  ],
  vservers: [
    {
      name: 'web',
      desired: 'started',
      preferred: ['n2'],
      avoid: [],
      antiAffinity: [],
      upToDate: ['n1', 'n2'],
      stale: [],
      reports: {},
    },
  ],
};

test('step is pure and deterministic', () => {
  const prev = emptyState();
  const frozen = JSON.stringify(prev);
  const a = step(prev, obs, 5, [], policy);
  const b = step(prev, obs, 5, [], policy);
  assert.equal(JSON.stringify(prev), frozen);
  assert.deepEqual(a, b);
  assert.deepEqual(a.commands, [
    {
      kind: 'assign',
      vserver: 'web',
      node: 'n1',
      epoch: 1,
      reason: 'least loaded eligible node (0 vservers)',
    },
  ]);
});

test('maintenance: no commands at all', () => {
  assert.deepEqual(step(emptyState(), { ...obs, maintenance: true }, 5, [], policy).commands, []);
});

test('a waiting vserver says why', () => {
  const o: Observation = { ...obs, vservers: [{ ...obs.vservers[0]!, upToDate: ['n2'], stale: ['n1'] }] };
  const r = step(emptyState(), o, 5, [], policy);
  assert.deepEqual(r.commands, []);
  assert.match(
    r.log.join('\n'),
    /web: waiting: no alive node holds an up-to-date replica \(n1 replica stale, n2 lease expired\)/,
  );
});

const cfg = clusterSchema.parse({ nodes: ['n1', 'n2'], vservers: { web: { replicas: ['n1'] } } });

function userError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof UserError);
    return err.message;
  }
  assert.fail('expected a UserError');
}

test('commands: errors name file and line', () => {
  assert.deepEqual(parseCommands('# c\nat 3 power off n1\n', 'cmds', cfg)[0]?.cmd, {
    kind: 'power',
    on: false,
    node: 'n1',
  });
  assert.match(
    userError(() => parseCommands('at 3 power off n9\n', 'cmds', cfg)),
    /^cmds:1: unknown node "n9"/,
  );
  assert.match(
    userError(() => parseCommands('\nat 3 dance\n', 'cmds', cfg)),
    /^cmds:2: unknown command "dance"/,
  );
  assert.match(
    userError(() => parseCommands('power off n1\n', 'cmds', cfg)),
    /^cmds:1: expected "at SECONDS COMMAND"/,
  );
});

test('cluster.yaml: errors name file, line and field', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cvserver-sim-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(
    join(dir, 'cluster.yaml'),
    'nodes: [n1]\nvservers:\n  web:\n    replicas: [n1]\n    desired: running\n',
  );
  writeFileSync(join(dir, 'commands'), '');
  assert.match(
    userError(() => loadScenario(dir)),
    /cluster\.yaml:5:\d+: vservers\.web\.desired: /,
  );
  writeFileSync(join(dir, 'cluster.yaml'), 'nodes: [n1]\nvservers:\n  web:\n    replicas: [n7]\n');
  assert.match(
    userError(() => loadScenario(dir)),
    /vservers\.web: unknown node "n7"/,
  );
});

test('diffLines marks only the differences', () => {
  assert.deepEqual(diffLines(['a', 'b'], ['a', 'b']), []);
  assert.deepEqual(diffLines(['a', 'b', 'c'], ['a', 'x', 'c']), ['  a', '+ x', '- b', '  c']);
});

test('a report of an older epoch is stale: the assigned node has not picked up the assignment yet', () => {
  const placed = step(emptyState(), obs, 5, [], policy).state; // web on n1 with epoch 1
  const withReport = (epoch: number): Observation => ({
    ...obs,
    vservers: [{ ...obs.vservers[0]!, reports: { n1: { status: 'stopped', since: 4, epoch } } }],
  });
  const stale = step(placed, withReport(0), 6, [], policy);
  assert.deepEqual(stale.commands, []);
  assert.equal(stale.state.vservers.web?.node, 'n1');
  // The same report for the current epoch: the node lost it (rebooted), so it is placed again.
  const current = step(placed, withReport(1), 6, [], policy);
  assert.match(current.log.join('\n'), /n1 reports it stopped: placing it again/);
  assert.equal(current.commands[0]?.kind, 'assign');
});
