import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { UserError } from '../../../src/lib/errors.ts';
import { type ControlRequest, callControl, serveControl } from '../../../src/volume/control.ts';

const dir = mkdtempSync(join(tmpdir(), 'cvs-control-'));
const path = join(dir, 'control.sock');
const seen: ControlRequest[] = [];
const server = await serveControl(path, async (req) => {
  seen.push(req);
  if (req.op === 'promote' && req.epoch === 13) throw new Error('cannot become primary: epoch 13 is unlucky');
  return { echoed: req.op };
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

test('a request gets its handler result', async () => {
  assert.deepEqual(await callControl(path, { op: 'status' }), { echoed: 'status' });
  assert.deepEqual(await callControl(path, { op: 'verify', resync: false, peer: 'b' }), { echoed: 'verify' });
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
