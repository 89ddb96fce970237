import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AGENT_FORMATS,
  clusterGate,
  decideFormat,
  type FormatRange,
  formatsOf,
  LEGACY_FORMATS,
} from '../../../src/agent/format.ts';

const r = (min: number, max = min): FormatRange => ({ min, max });
const ctx = (mine: FormatRange, live: FormatRange[]) => ({
  cluster: 'c1',
  agentVersion: '0.2.0',
  mine,
  live,
});

test('the cluster format: kept, recorded when missing, raised only when every live agent supports it, refused when unknown', () => {
  const cases: Array<[string, number | undefined, FormatRange, FormatRange[], unknown]> = [
    ['no record: format 1, written', undefined, r(1), [r(1), r(1)], { kind: 'use', format: 1, create: true }],
    ['recorded 1, everyone at 1', 1, r(1), [r(1), r(1)], { kind: 'use', format: 1, create: false }],
    [
      'next release joins: one agent reads 1-2, the rest 1',
      1,
      r(1, 2),
      [r(1, 2), r(1)],
      { kind: 'use', format: 1, create: false },
    ],
    [
      'an agent from before the rule (no formats: 1-1) holds it back',
      1,
      r(1, 2),
      [r(1, 2), LEGACY_FORMATS],
      { kind: 'use', format: 1, create: false },
    ],
    ['every live agent reads 1-2: raise', 1, r(1, 2), [r(1, 2), r(1, 2)], { kind: 'raise', from: 1, to: 2 }],
    ['raise to the highest common only', 1, r(1, 3), [r(1, 3), r(2, 2)], { kind: 'raise', from: 1, to: 2 }],
    [
      'no record and everyone reads 1-2: raise from 1',
      undefined,
      r(1, 2),
      [r(1, 2)],
      { kind: 'raise', from: 1, to: 2 },
    ],
    [
      'already at the highest common',
      2,
      r(1, 2),
      [r(1, 2), r(2, 3)],
      { kind: 'use', format: 2, create: false },
    ],
    ['never lowered', 2, r(1, 2), [r(1, 2), r(1, 1)], { kind: 'use', format: 2, create: false }],
  ];
  for (const [what, stored, mine, live, want] of cases) {
    const d = decideFormat(stored, ctx(mine, live));
    const got = d.kind === 'raise' ? { kind: d.kind, from: d.from, to: d.to } : d;
    assert.deepEqual(got, want, what);
  }

  const old = decideFormat(2, ctx(r(1), [r(1, 2), r(1, 2), r(1)]));
  assert.deepEqual(old, {
    kind: 'refuse',
    format: 2,
    reason:
      'cluster c1 stores format 2; this agent (cvserver 0.2.0) reads formats 1-1: upgrade cvserver on this node first',
  });
  const tooNew = decideFormat(1, ctx(r(3, 4), [r(1, 2)]));
  assert.equal(tooNew.kind, 'refuse');
  assert.match(
    tooNew.kind === 'refuse' ? tooNew.reason : '',
    /reads formats 3-4: this release no longer reads it/,
  );
});

test('this release reads and writes format 1; a node record without formats is an agent of before the rule', () => {
  assert.deepEqual(AGENT_FORMATS, { min: 1, max: 1 });
  assert.deepEqual(formatsOf({}), { min: 1, max: 1 });
  assert.deepEqual(formatsOf({ formats: r(1, 2) }), r(1, 2));
});

test('the gate: no decisions from an unknown format, nor from a state record that was set aside', () => {
  const use = decideFormat(1, ctx(r(1), [r(1)]));
  assert.deepEqual(clusterGate(use, undefined), { act: true });
  const refused = decideFormat(2, ctx(r(1), [r(1)]));
  assert.deepEqual(clusterGate(refused, undefined), {
    act: false,
    reason: refused.kind === 'refuse' ? refused.reason : '',
  });
  const g = clusterGate(use, '/cvserver/c1/state: stored format version 2, this agent knows version 1');
  assert.equal(g.act, false);
  assert.match(
    g.act ? '' : g.reason,
    /^the manager's state record is set aside \(\/cvserver\/c1\/state: stored format version 2.*\): no manager decisions and no new assignments/,
  );
});
