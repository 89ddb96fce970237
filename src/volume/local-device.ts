import { type FileHandle, open } from 'node:fs/promises';
import { type BlockDevice, DeviceError } from './block-device.ts';

/**
 * A BlockDevice over the volume's data file on this node: positional reads and writes through the
 * page cache, and flush = fdatasync, which is the durability promise FSYNC makes.
 */
export class LocalDevice implements BlockDevice {
  readonly size: number;
  private readonly file: FileHandle;

  private constructor(file: FileHandle, size: number) {
    this.file = file;
    this.size = size;
  }

  static async open(path: string, size: number): Promise<LocalDevice> {
    const file = await open(path, 'r+');
    const st = await file.stat();
    if (st.size !== size) {
      await file.close();
      throw new Error(`${path}: data file is ${st.size} bytes, metadata says ${size}`);
    }
    return new LocalDevice(file, size);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check(offset, length);
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.file.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) {
        buf.fill(0, done);
        break;
      }
      done += bytesRead;
    }
    return buf;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    this.check(offset, data.length);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.file.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    await this.file.datasync();
  }

  async close(): Promise<void> {
    await this.file.close();
  }

  private check(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new DeviceError(
        'EINVAL',
        `I/O at ${offset}+${length} is outside the device (${this.size} bytes)`,
      );
    }
  }
}
