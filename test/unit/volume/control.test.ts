import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { UserError } from '../../../src/lib/errors.ts';
import {
  CONTROL_OPS,
  type ControlHandlers,
  type ControlRequest,
  callControl,
  refuseControl,
  serveControl,
} from '../../../src/volume/control.ts';
import type { DaemonStatus } from '../../../src/volume/layout.ts';

const dir = mkdtempSync(join(tmpdir(), 'cvs-control-'));
const path = join(dir, 'control.sock');
const seen: ControlRequest[] = [];
const status = { pid: 1, state: 'serving' } as DaemonStatus;
const handlers: ControlHandlers = {
  ...refuseControl(CONTROL_OPS, (op) => `no ${op} in this test`),
  status: async () => status,
  verify: async (req) => [{ peer: req.peer ?? 'all', bytesCompared: req.resync ? 1 : 0, mismatches: [] }],
  promote: async (req) => {
    if (req.epoch === 13) throw new Error('cannot become primary: epoch 13 is unlucky');
    return { role: 'Primary', epoch: req.epoch ?? 1 };
  },
};
const server = await serveControl(path, handlers, (req, run) => {
  seen.push(req);
  return run();
});
after(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Sends raw bytes and returns the raw reply. */
function raw(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let out = '';
    s.setEncoding('utf8');
    s.on('connect', () => s.write(bytes));
    s.on('data', (d: string) => (out += d));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
}

test('a request gets its handler result, typed by its row of the table', async () => {
  const s = await callControl(path, { op: 'status' });
  assert.equal(s.pid, 1);
  const [v] = await callControl(path, { op: 'verify', resync: false, peer: 'b' });
  assert.equal(v?.peer, 'b');
  const p = await callControl(path, { op: 'promote', epoch: 4 });
  assert.deepEqual(p, { role: 'Primary', epoch: 4 });
  await assert.rejects(callControl(path, { op: 'demote' }), /no demote in this test/);
});

test('the schema built from the table takes every operation and only its fields', async () => {
  const minimal: Record<string, object> = { verify: { resync: true }, 'resolve-split-brain': { peer: 'b' } };
  for (const op of CONTROL_OPS) {
    const fields =
      op.startsWith('snapshot-') && op !== 'snapshot-list' ? { name: 's1' } : (minimal[op] ?? {});
    const reply = JSON.parse(await raw(`${JSON.stringify({ op, ...fields })}\n`)) as { error?: string };
    assert.doesNotMatch(reply.error ?? '', /bad request/, op);
    const extra = JSON.parse(await raw(`${JSON.stringify({ op, ...fields, extra: 1 })}\n`)) as {
      error?: string;
    };
    assert.match(extra.error ?? '', /bad request/, `${op} with an unknown field`);
  }
});

test('callers cannot send a request or read a reply the table does not have (type check)', () => {
  const typeOnly = async () => {
    // @ts-expect-error verify needs `resync`
    await callControl(path, { op: 'verify' });
    // @ts-expect-error status takes no fields
    await callControl(path, { op: 'status', peer: 'b' });
    // @ts-expect-error demote answers a role, not an epoch
    (await callControl(path, { op: 'demote' })).epoch;
    // @ts-expect-error a handler's reply must match its row
    const wrong: Pick<ControlHandlers, 'shutdown'> = { shutdown: async () => ({ stopped: 'yes' }) };
    return wrong;
  };
  assert.equal(typeof typeOnly, 'function');
});

test('a refusal comes back as a one-line UserError with the reason', async () => {
  await assert.rejects(callControl(path, { op: 'promote', epoch: 13 }), (e: Error) => {
    assert.ok(e instanceof UserError);
    assert.equal(e.message, 'cannot become primary: epoch 13 is unlucky');
    return true;
  });
});

test('malformed requests get an error reply and never reach the handler', async () => {
  const before = seen.length;
  for (const bad of [
    'not json\n',
    '{"op":"format-disk"}\n',
    '{"op":"promote","epoch":-1}\n',
    '{"op":"status","x":1}\n',
  ]) {
    const reply = JSON.parse(await raw(bad)) as { ok: boolean; error: string };
    assert.equal(reply.ok, false);
    assert.match(reply.error, /bad request/);
  }
  const huge = JSON.parse(await raw('x'.repeat(100 * 1024))) as { ok: boolean; error: string };
  assert.deepEqual(huge, { ok: false, error: 'request too large' });
  assert.equal(seen.length, before);
});

test('no daemon: a clear error', async () => {
  await assert.rejects(
    callControl(join(dir, 'nobody.sock'), { op: 'status' }),
    /cannot reach the volume daemon/,
  );
});
