import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { parseYaml } from '../../../src/lib/config.ts';
import { UserError } from '../../../src/lib/errors.ts';

const schema = z.strictObject({ name: z.string(), limits: z.strictObject({ pids: z.number().int() }) });

function errorOf(text: string): string {
  try {
    parseYaml(text, 'x.yaml', schema);
  } catch (err) {
    assert.ok(err instanceof UserError);
    return err.message;
  }
  assert.fail('expected an error');
}

test('valid YAML passes', () => {
  assert.deepEqual(parseYaml('name: a\nlimits:\n  pids: 3\n', 'x.yaml', schema), {
    name: 'a',
    limits: { pids: 3 },
  });
});

test('errors name the file, line, field and expectation', () => {
  assert.match(errorOf('name: a\nlimits:\n  pids: lots\n'), /^x\.yaml:3:9: limits\.pids: expected number/);
  assert.match(
    errorOf('name: a\nlimits:\n  pids: 1\n  colour: red\n'),
    /^x\.yaml:4:\d+: limits: unknown key "colour"/,
  );
  assert.match(errorOf('name: [a\n'), /^x\.yaml:\d+:\d+: invalid YAML/);
  assert.match(errorOf('name: a\nname: b\nlimits: {pids: 1}\n'), /invalid YAML/);
});
