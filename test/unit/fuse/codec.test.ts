import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeRequest, encodeDirents } from '../../../src/fuse/codec.ts';
import { Opcode } from '../../../src/fuse/protocol.ts';
import { request, writeBody } from '../../helpers/fuse-requests.ts';

test('decodes LOOKUP, WRITE and INIT', () => {
  const l = decodeRequest(request(Opcode.LOOKUP, Buffer.from('device\0')));
  assert.ok(l.ok);
  assert.deepEqual(l.request, { op: 'LOOKUP', name: 'device' });
  const w = decodeRequest(request(Opcode.WRITE, writeBody(4096n, Buffer.from('abcd')), 2n));
  assert.ok(w.ok && w.request.op === 'WRITE');
  assert.equal(w.request.offset, 4096n);
  assert.equal(w.request.data.toString(), 'abcd');
});

test('truncated and malformed requests are rejected, never thrown', () => {
  assert.equal(decodeRequest(Buffer.alloc(10)).ok, false); // short header
  const good = request(Opcode.READ, Buffer.alloc(40));
  assert.equal(decodeRequest(good.subarray(0, 60)).ok, false); // length mismatch
  const shortBody = request(Opcode.READ, Buffer.alloc(12));
  const r = decodeRequest(shortBody);
  assert.equal(r.ok, false);
  assert.ok(!r.ok && r.header?.unique === 7n, 'header kept so the session can answer EIO');
  assert.equal(decodeRequest(request(Opcode.LOOKUP, Buffer.from('no-nul'))).ok, false);
  const lying = writeBody(0n, Buffer.from('xy'));
  lying.writeUInt32LE(1000, 16);
  assert.equal(decodeRequest(request(Opcode.WRITE, lying)).ok, false);
  for (let i = 0; i < 2000; i++) {
    const junk = Buffer.alloc(Math.floor(Math.random() * 200));
    for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(Math.random() * 256);
    decodeRequest(junk); // must not throw
  }
});

test('READDIR honours offset and size', () => {
  const entries = [
    { ino: 1n, name: '.', type: 4 },
    { ino: 1n, name: '..', type: 4 },
    { ino: 2n, name: 'device', type: 8 },
  ];
  assert.equal(encodeDirents(entries, 0, 4096).length, 32 + 32 + 32);
  assert.equal(encodeDirents(entries, 2, 4096).length, 32);
  assert.equal(encodeDirents(entries, 0, 40).length, 32);
  assert.equal(encodeDirents(entries, 3, 4096).length, 0);
});
