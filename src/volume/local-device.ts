import { type FileHandle, open } from 'node:fs/promises';
import { type BlockDevice, DeviceError } from './block-device.ts';

/**
 * A BlockDevice over the volume's data file on this node: positional reads and writes through the
 * page cache, and flush = fdatasync, which is the durability promise FSYNC makes.
 */
export class LocalDevice implements BlockDevice {
  readonly size: number;
  private readonly file: FileHandle;
  /** Writes completed so far, and how many of them the last finished fdatasync covers. */
  private writesDone = 0;
  private writesSynced = 0;
  private syncing: Promise<void> | undefined;

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
    this.writesDone++;
  }

  /**
   * fdatasync, coalesced: one guest fsync arrives as several FSYNC requests, and concurrent ones
   * can share a sync. A flush returns once an fdatasync that *started after* every write completed
   * before the call has finished; if nothing was written since the last one, it costs nothing.
   */
  async flush(): Promise<void> {
    const target = this.writesDone;
    while (this.writesSynced < target) {
      if (this.syncing) {
        await this.syncing.catch(() => {});
        continue;
      }
      const covers = this.writesDone;
      this.syncing = this.file
        .datasync()
        .then(() => {
          this.writesSynced = Math.max(this.writesSynced, covers);
        })
        .finally(() => {
          this.syncing = undefined;
        });
      await this.syncing;
    }
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
