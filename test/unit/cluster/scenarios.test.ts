import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { runFolder } from '../../../src/sim/run-folder.ts';

const root = new URL('../../scenarios/', import.meta.url).pathname;

for (const name of readdirSync(root).sort()) {
  test(`scenario ${name}`, () => {
    const r = runFolder(`${root}${name}`);
    assert.deepEqual(r.violations, [], 'invariants');
    assert.equal(
      r.diff.join('\n'),
      '',
      'log differs from log.expect (review, then `cvserver sim run --update`)',
    );
  });
}
