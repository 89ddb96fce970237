import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeRequest } from '../../../src/fuse/codec.ts';
import { Opcode } from '../../../src/fuse/protocol.ts';
import type { BlockDevice } from '../../../src/volume/block-device.ts';
import { DeviceFilesystem } from '../../../src/volume/device-filesystem.ts';
import { request, writeBody } from '../../helpers/fuse-requests.ts';

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
