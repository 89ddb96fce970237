import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  allocAlignedBuffers,
  DIRECT_IO_ALIGNMENT,
  isDirectIoAligned,
} from '../../../src/lib/aligned-buffers.ts';
import { DeviceError } from '../../../src/volume/block-device.ts';
import { LocalDevice } from '../../../src/volume/local-device.ts';

const SIZE = 4 << 20;

/** A data file of SIZE bytes in a fresh temporary directory, removed after the test. */
function dataFile(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cvs-local-device-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'data');
  writeFileSync(path, Buffer.alloc(0));
  writeFileSync(path, Buffer.alloc(SIZE));
  return path;
}

/** Aligned memory holding `data`, as the FUSE session hands over a WRITE payload. */
function alignedCopy(data: Buffer): Buffer {
  const [buf] = allocAlignedBuffers(data.length);
  data.copy(buf!);
  return buf!;
}

test('allocAlignedBuffers places the byte at `lead` on an alignment boundary, in distinct buffers', () => {
  const bufs = allocAlignedBuffers(10_000, 3, 80);
  assert.equal(bufs.length, 3);
  for (const b of bufs) {
    assert.equal(b.length, 10_000);
    assert.ok(isDirectIoAligned(b.subarray(80)));
    assert.ok(!isDirectIoAligned(b));
    assert.ok(isDirectIoAligned(b.subarray(80 + 512), 512));
  }
  bufs[0]!.fill(1);
  bufs[1]!.fill(2);
  bufs[2]!.fill(3);
  assert.deepEqual([bufs[0]![9_999], bufs[1]![0], bufs[2]![0]], [1, 2, 3]);
  assert.ok(isDirectIoAligned(allocAlignedBuffers(DIRECT_IO_ALIGNMENT)[0]!));
  assert.ok(!isDirectIoAligned(Buffer.alloc(8192)), 'ordinary memory is never known to be aligned');
});

for (const direct of [true, false]) {
  test(`LocalDevice (direct: ${direct}) reads back what any mix of writes, plain and durable, wrote, and the file holds it`, async (t) => {
    const path = dataFile(t);
    const dev = await LocalDevice.open(path, SIZE, { direct });
    t.after(() => dev.close().catch(() => {}));
    if (!direct) assert.equal(dev.direct, false);
    else t.diagnostic(`O_DIRECT in use on ${tmpdir()}: ${dev.direct}`);
    const model = Buffer.alloc(SIZE);
    // Every other write durable (O_DSYNC, a replica's path): the same bytes must land either way.
    let n = 0;
    const write = async (offset: number, data: Buffer): Promise<void> => {
      await (n++ % 2 ? dev.writeDurable(offset, data) : dev.write(offset, data));
      data.copy(model, offset);
    };
    // Aligned offset, length and memory (the FUSE WRITE path), 1 MiB and 4 KiB.
    await write(1 << 20, alignedCopy(randomBytes(1 << 20)));
    await write(8192, alignedCopy(randomBytes(4096)));
    // Aligned offset and length, ordinary memory (staged through a bounce buffer).
    await write(65536, randomBytes(12288));
    await write(2 << 20, randomBytes(1536 * 1024)); // longer than one bounce buffer
    // Unaligned offset or length (the page-cache path), overlapping data written directly.
    await write(8192 + 100, randomBytes(300));
    await write((1 << 20) - 7, randomBytes(4096 + 14));
    // Then a direct write over a range the page-cache path wrote: the cache must not hide it.
    await write(8192, alignedCopy(randomBytes(4096)));
    // Concurrent writes to distinct blocks.
    await Promise.all(
      Array.from({ length: 16 }, (_, i) => write((3 << 20) + i * 4096, alignedCopy(randomBytes(4096)))),
    );
    await dev.flush();

    for (const [offset, length] of [
      [0, SIZE],
      [8192, 4096],
      [8192 + 50, 512],
      [(1 << 20) - 4096, 8192],
      [65536, 12288],
      [(2 << 20) + 512, 1 << 20],
    ] as const) {
      assert.ok(
        (await dev.read(offset, length)).equals(model.subarray(offset, offset + length)),
        `read ${offset}+${length}`,
      );
    }
    await dev.close();
    assert.ok(readFileSync(path).equals(model), 'the data file holds what was written');
  });
}

test('LocalDevice refuses I/O outside the device and a data file of the wrong size', async (t) => {
  const path = dataFile(t);
  const dev = await LocalDevice.open(path, SIZE);
  t.after(() => dev.close().catch(() => {}));
  await assert.rejects(
    dev.write(SIZE - 4096, Buffer.alloc(8192)),
    (e) => e instanceof DeviceError && e.errno === 'EINVAL',
  );
  await assert.rejects(dev.read(-1, 10), (e) => e instanceof DeviceError && e.errno === 'EINVAL');
  await assert.rejects(LocalDevice.open(path, SIZE * 2), /data file is 4194304 bytes, metadata says 8388608/);
});

test('LocalDevice flush coalesces: nothing written since the last flush costs nothing', async (t) => {
  const path = dataFile(t);
  const dev = await LocalDevice.open(path, SIZE);
  t.after(() => dev.close().catch(() => {}));
  await dev.write(0, alignedCopy(randomBytes(4096)));
  await Promise.all([dev.flush(), dev.flush(), dev.flush()]);
  await dev.flush();
  assert.ok(
    readFileSync(path)
      .subarray(0, 4096)
      .equals(await dev.read(0, 4096)),
  );
});

test('LocalDevice runs a write or flush that comes alone inline, overlapping ones in the thread pool', async (t) => {
  const path = dataFile(t);
  const dev = await LocalDevice.open(path, SIZE);
  t.after(() => dev.close().catch(() => {}));
  const pause = () => new Promise((r) => setTimeout(r, 2));
  for (let i = 0; i < 4; i++) {
    await pause();
    await dev.write(i * 4096, alignedCopy(randomBytes(4096)));
    await pause();
    await dev.flush();
  }
  assert.deepEqual(dev.stats, { inline: 8, pooled: 0 });
  await pause();
  // The first of a burst runs inline; the ones started while it is still in progress go to the pool.
  await Promise.all(Array.from({ length: 8 }, (_, i) => dev.write((1 << 20) + i * 4096, randomBytes(4096))));
  assert.ok(dev.stats.pooled >= 7, `overlapping writes pooled: ${JSON.stringify(dev.stats)}`);

  const noInline = await LocalDevice.open(path, SIZE, { inline: false });
  t.after(() => noInline.close().catch(() => {}));
  await pause();
  await noInline.write(0, alignedCopy(randomBytes(4096)));
  await noInline.flush();
  assert.deepEqual(noInline.stats, { inline: 0, pooled: 2 });
});
