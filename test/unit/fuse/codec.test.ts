import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeRequest, encodeDirents } from '../../../src/fuse/codec.ts';
import { DeviceFilesystem } from '../../../src/fuse/device-filesystem.ts';
import { IN_HEADER_SIZE, Opcode } from '../../../src/fuse/protocol.ts';
import type { BlockDevice } from '../../../src/volume/block-device.ts';

function request(opcode: number, body: Buffer, nodeid = 1n, unique = 7n): Buffer {
  const h = Buffer.alloc(IN_HEADER_SIZE);
  h.writeUInt32LE(IN_HEADER_SIZE + body.length, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(unique, 8);
  h.writeBigUInt64LE(nodeid, 16);
  return Buffer.concat([h, body]);
}

function writeBody(offset: bigint, data: Buffer): Buffer {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(offset, 8);
  b.writeUInt32LE(data.length, 16);
  return Buffer.concat([b, data]);
}

class MemoryDevice implements BlockDevice {
  readonly size = 1 << 20;
  readonly mem = Buffer.alloc(1 << 20);
  flushes = 0;
  async read(o: number, l: number) {
    return Buffer.from(this.mem.subarray(o, o + l));
  }
  async write(o: number, d: Buffer) {
    d.copy(this.mem, o);
  }
  async flush() {
    this.flushes++;
  }
  async close() {}
}

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

test('the device filesystem maps I/O to the block device and errors to errno', async () => {
  const dev = new MemoryDevice();
  const fs = new DeviceFilesystem(dev);
  const run = async (buf: Buffer) => {
    const d = decodeRequest(buf);
    assert.ok(d.ok);
    return fs.handle(d.header, d.request);
  };
  const w = await run(request(Opcode.WRITE, writeBody(8192n, Buffer.from('hello')), 2n));
  assert.equal(w!.readInt32LE(4), 0);
  assert.equal(w!.readUInt32LE(16), 5);
  assert.equal(dev.mem.subarray(8192, 8197).toString(), 'hello');
  const past = await run(request(Opcode.WRITE, writeBody(BigInt(dev.size), Buffer.from('x')), 2n));
  assert.equal(past!.readInt32LE(4), -28); // ENOSPC
  const fsync = await run(request(Opcode.FSYNC, Buffer.alloc(16), 2n));
  assert.equal(fsync!.readInt32LE(4), 0);
  assert.equal(dev.flushes, 1);
  const missing = await run(request(Opcode.LOOKUP, Buffer.from('nope\0')));
  assert.equal(missing!.readInt32LE(4), -2);
  const unknown = await run(request(999, Buffer.alloc(0)));
  assert.equal(unknown!.readInt32LE(4), -38); // ENOSYS
  assert.equal(await run(request(Opcode.FORGET, Buffer.alloc(8), 2n)), null);
});
