import { close, constants, fdatasync, fdatasyncSync, fstat, open, read, write, writeSync } from 'node:fs';
import { allocAlignedBuffers, isDirectIoAligned } from '../lib/aligned-buffers.ts';
import { errnoCode } from '../lib/errors.ts';
import { type BlockDevice, DeviceError } from './block-device.ts';

export interface LocalDeviceOptions {
  /**
   * Write and read the data file with O_DIRECT when its filesystem allows it (default true).
   * Through the page cache, every fdatasync pays the whole writeback of what the FSYNC covers
   * and each write is copied once more; direct I/O sends the data to the disk as it arrives.
   */
  direct?: boolean;
  /**
   * Run a write or flush that comes alone synchronously on the calling thread (default true). A
   * trip through the libuv thread pool and back costs two thread wake-ups (about 50 µs on our
   * 2-core VMs) per request, much of a 4 KiB direct write; when calls overlap they still go to
   * the pool, so the disk sees them in parallel. Reads always go to the pool.
   */
  inline?: boolean;
}

/**
 * A call counts as alone when no other write or flush is in progress and the previous one ended at
 * least this long ago (ms). Requests already queued behind an inline one start within
 * microseconds of its end, so a burst goes to the pool after its first request; a serial
 * writer's next request came later than this in about three cases out of four measured (the
 * others merely take the pool path).
 */
const ALONE_GAP_MS = 0.03;

/** Largest piece one direct read stages through a bounce buffer. */
const BOUNCE_SIZE = 1024 * 1024;
/** Bounce buffers kept at most; beyond that, staged I/O takes the page-cache path (bounded RSS). */
const MAX_BOUNCES = 8;
/** Block sizes tried, smallest first, when probing what direct I/O on the data file accepts. */
const PROBE_BLOCK_SIZES = [512, 4096];

/**
 * A BlockDevice over the volume's data file on this node, and flush = fdatasync, which is the
 * durability promise FSYNC makes.
 *
 * I/O goes straight to the disk (O_DIRECT) when offset and length are multiples of the block size
 * direct I/O accepts on this file, staged through an aligned bounce buffer when the caller's
 * memory is not aligned (see allocAlignedBuffers); anything else, or a filesystem without
 * O_DIRECT, goes through the page cache on a second descriptor. Linux keeps the two coherent
 * (a direct write drops the cached pages it covers) and fdatasync covers the file whichever
 * descriptor wrote it.
 */
export class LocalDevice implements BlockDevice {
  readonly size: number;
  private readonly fd: number;
  /** The same file opened with O_DSYNC: a write through it is on stable storage when it returns. */
  private readonly dsyncFd: number;
  /**
   * The O_DIRECT descriptors, plain and O_DSYNC (a FUA write on most disks), if direct I/O works on
   * this file. Closed only by close(): closing them when direct I/O fails could let a newly opened
   * file take a number under an operation still queued on it.
   */
  private readonly directFds: { plain: number; dsync: number } | undefined;
  /** False once the filesystem refused direct I/O after all (EINVAL): the page-cache path from then on. */
  private directOn: boolean;
  /** Offsets, lengths and memory of direct I/O must be multiples of this. */
  private readonly blockSize: number;
  /** Idle bounce buffers, and how many exist (idle or in use). */
  private readonly bounces: Buffer[];
  private bounceCount: number;
  /** Writes completed so far, and how many of them the last finished fdatasync covers. */
  private writesDone = 0;
  private writesSynced = 0;
  private syncing: Promise<void> | undefined;
  private readonly inline: boolean;
  /** Writes and flushes in progress, and when the last one ended. */
  private active = 0;
  private lastEnd = 0;
  /** Writes and flushes run inline and in the pool so far (for tests and tuning). */
  readonly stats = { inline: 0, pooled: 0 };

  private constructor(
    fds: { fd: number; dsyncFd: number },
    direct: { fd: number; dsyncFd: number; blockSize: number; bounce: Buffer } | undefined,
    size: number,
    inline: boolean,
  ) {
    this.inline = inline;
    this.fd = fds.fd;
    this.dsyncFd = fds.dsyncFd;
    this.directFds = direct && { plain: direct.fd, dsync: direct.dsyncFd };
    this.directOn = direct !== undefined;
    this.blockSize = direct?.blockSize ?? 1;
    this.bounces = direct ? [direct.bounce] : [];
    this.bounceCount = this.bounces.length;
    this.size = size;
  }

  static async open(path: string, size: number, opts: LocalDeviceOptions = {}): Promise<LocalDevice> {
    const fd = await call<number>((cb) => open(path, constants.O_RDWR, cb));
    let dsyncFd: number | undefined;
    try {
      const st = await call<{ size: number }>((cb) => fstat(fd, cb));
      if (st.size !== size) throw new Error(`${path}: data file is ${st.size} bytes, metadata says ${size}`);
      dsyncFd = await call<number>((cb) => open(path, constants.O_RDWR | constants.O_DSYNC, cb));
      const direct = opts.direct === false ? undefined : await openDirect(path);
      return new LocalDevice({ fd, dsyncFd }, direct, size, opts.inline !== false);
    } catch (err) {
      await call<void>((cb) => close(fd, cb));
      if (dsyncFd !== undefined) await call<void>((cb) => close(dsyncFd!, cb));
      throw err;
    }
  }

  /** Whether I/O currently goes to the disk directly (for status and tests). */
  get direct(): boolean {
    return this.directOn;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.check(offset, length);
    const buf = Buffer.allocUnsafe(length);
    const bounce = this.aligned(offset, length) ? this.takeBounce() : undefined;
    if (bounce) {
      try {
        for (let done = 0; done < length; ) {
          const piece = Math.min(BOUNCE_SIZE, length - done);
          const got = await this.directRead(bounce, piece, offset + done);
          if (got === undefined) return await this.readBuffered(buf, offset + done, done);
          bounce.copy(buf, done, 0, got);
          done += got;
          if (got < piece) return await this.readBuffered(buf, offset + done, done);
        }
        return buf;
      } finally {
        this.bounces.push(bounce);
      }
    }
    return this.readBuffered(buf, offset, 0);
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.writeWith(offset, data, false);
  }

  /**
   * A write that is on stable storage when it resolves (O_DSYNC: on most disks a FUA write, far
   * cheaper than a write plus an fdatasync of its own). A replica writes its peer's data this way,
   * so the primary's FSYNC needs no round trip to it. No later flush() has to cover it.
   */
  writeDurable(offset: number, data: Buffer): Promise<void> {
    return this.writeWith(offset, data, true);
  }

  private async writeWith(offset: number, data: Buffer, durable: boolean): Promise<void> {
    this.check(offset, data.length);
    const inline = this.alone();
    this.active++;
    try {
      let done = 0;
      if (this.directOn && this.aligned(offset, data.length)) {
        done = isDirectIoAligned(data, this.blockSize)
          ? await this.directWrite(data, offset, inline, durable)
          : await this.stagedWrite(data, offset, inline, durable);
      }
      // The page-cache path: unaligned I/O, no O_DIRECT, or the tail of a short direct write.
      const fd = durable ? this.dsyncFd : this.fd;
      while (done < data.length) done += await this.pwrite(inline, fd, data, done, offset + done);
      if (!durable) this.writesDone++;
    } finally {
      this.active--;
      this.lastEnd = performance.now();
    }
  }

  /**
   * fdatasync, coalesced: one guest fsync arrives as several FSYNC requests, and concurrent ones
   * can share a sync. A flush returns once an fdatasync that *started after* every write completed
   * before the call has finished; if nothing was written since the last one, it costs nothing.
   */
  async flush(): Promise<void> {
    const target = this.writesDone;
    const inline = this.alone();
    this.active++;
    try {
      await this.flushUpTo(target, inline);
    } finally {
      this.active--;
      this.lastEnd = performance.now();
    }
  }

  private async flushUpTo(target: number, inline: boolean): Promise<void> {
    while (this.writesSynced < target) {
      if (this.syncing) {
        await this.syncing.catch(() => {});
        continue;
      }
      const covers = this.writesDone;
      this.syncing = this.fdatasync(inline)
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
    this.directOn = false;
    for (const fd of [this.directFds?.plain, this.directFds?.dsync, this.dsyncFd, this.fd])
      if (fd !== undefined) await call<void>((cb) => close(fd, cb));
  }

  /** Whether the next write or flush comes alone and so runs inline (see LocalDeviceOptions.inline). */
  private alone(): boolean {
    return this.inline && this.active === 0 && performance.now() - this.lastEnd >= ALONE_GAP_MS;
  }

  /** One pwrite of data[from..] at `position`, inline or through the thread pool; bytes written. */
  private async pwrite(
    inline: boolean,
    fd: number,
    data: Buffer,
    from: number,
    position: number,
  ): Promise<number> {
    if (inline) {
      this.stats.inline++;
      return writeSync(fd, data, from, data.length - from, position);
    }
    this.stats.pooled++;
    return await call<number>((cb) => write(fd, data, from, data.length - from, position, cb));
  }

  private async fdatasync(inline: boolean): Promise<void> {
    if (inline) {
      this.stats.inline++;
      fdatasyncSync(this.fd);
      return;
    }
    this.stats.pooled++;
    await call<void>((cb) => fdatasync(this.fd, cb));
  }

  /** An idle bounce buffer, a new one while under MAX_BOUNCES, else undefined (page-cache path). */
  private takeBounce(): Buffer | undefined {
    if (!this.directOn) return undefined;
    const idle = this.bounces.pop();
    if (idle || this.bounceCount >= MAX_BOUNCES) return idle;
    this.bounceCount++;
    return allocAlignedBuffers(BOUNCE_SIZE)[0];
  }

  private aligned(offset: number, length: number): boolean {
    return offset % this.blockSize === 0 && length % this.blockSize === 0;
  }

  /**
   * One direct write of all of `data` (aligned memory); returns the bytes written, fewer on a short
   * write. EINVAL means the filesystem refuses after all: direct I/O is switched off and the
   * caller's page-cache path writes the rest.
   */
  private async directWrite(
    data: Buffer,
    offset: number,
    inline: boolean,
    durable: boolean,
  ): Promise<number> {
    const fds = this.directOn ? this.directFds : undefined;
    if (!fds) return 0;
    const fd = durable ? fds.dsync : fds.plain;
    let done = 0;
    try {
      while (done < data.length) {
        const n = await this.pwrite(inline, fd, data, done, offset + done);
        done += n;
        if (n === 0 || done % this.blockSize !== 0) break;
      }
    } catch (err) {
      if (errnoCode(err) !== 'EINVAL') throw err;
      this.directOn = false;
    }
    return done;
  }

  /**
   * Direct writes of `data` (not aligned memory, e.g. a test's or a peer's buffer) copied piece by
   * piece into a bounce buffer; returns the bytes written (0 when no bounce buffer is free).
   */
  private async stagedWrite(
    data: Buffer,
    offset: number,
    inline: boolean,
    durable: boolean,
  ): Promise<number> {
    const bounce = this.takeBounce();
    if (!bounce) return 0;
    let done = 0;
    try {
      while (done < data.length) {
        const piece = Math.min(BOUNCE_SIZE, data.length - done);
        data.copy(bounce, 0, done, done + piece);
        const wrote = await this.directWrite(bounce.subarray(0, piece), offset + done, inline, durable);
        done += wrote;
        if (wrote < piece) break;
      }
    } finally {
      this.bounces.push(bounce);
    }
    return done;
  }

  /** One direct read into `bounce`; undefined when direct I/O was refused (switched off). */
  private async directRead(bounce: Buffer, length: number, offset: number): Promise<number | undefined> {
    const fds = this.directOn ? this.directFds : undefined;
    if (!fds) return undefined;
    try {
      return await call<number>((cb) => read(fds.plain, bounce, 0, length, offset, cb));
    } catch (err) {
      if (errnoCode(err) !== 'EINVAL') throw err;
      this.directOn = false;
      return undefined;
    }
  }

  /** Fills buf[from..] from `offset` on through the page cache; past the end of file reads zeros. */
  private async readBuffered(buf: Buffer, offset: number, from: number): Promise<Buffer> {
    for (let done = from; done < buf.length; ) {
      const n = await call<number>((cb) =>
        read(this.fd, buf, done, buf.length - done, offset + done - from, cb),
      );
      if (n === 0) {
        buf.fill(0, done);
        break;
      }
      done += n;
    }
    return buf;
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

/**
 * Opens `path` with O_DIRECT and finds the smallest block size direct reads accept (which is also
 * the alignment the memory needs). Undefined when the filesystem has no direct I/O or the aligned
 * memory turns out not to be.
 */
async function openDirect(
  path: string,
): Promise<{ fd: number; dsyncFd: number; blockSize: number; bounce: Buffer } | undefined> {
  let fd: number;
  try {
    fd = await call<number>((cb) => open(path, constants.O_RDWR | constants.O_DIRECT, cb));
  } catch (err) {
    if (errnoCode(err) === 'EINVAL') return undefined;
    throw err;
  }
  const bounce = allocAlignedBuffers(BOUNCE_SIZE)[0]!;
  if (isDirectIoAligned(bounce)) {
    for (const blockSize of PROBE_BLOCK_SIZES) {
      try {
        await call<number>((cb) => read(fd, bounce, 0, blockSize, 0, cb));
      } catch (err) {
        if (errnoCode(err) === 'EINVAL') continue;
        await call<void>((cb) => close(fd, cb));
        throw err;
      }
      const flags = constants.O_RDWR | constants.O_DIRECT | constants.O_DSYNC;
      const dsyncFd = await call<number>((cb) => open(path, flags, cb)).catch(async (err: unknown) => {
        await call<void>((cb) => close(fd, cb));
        throw err;
      });
      return { fd, dsyncFd, blockSize, bounce };
    }
  }
  await call<void>((cb) => close(fd, cb));
  return undefined;
}

/**
 * Runs a callback-style fs call as a promise. The callback API rather than FileHandle: each
 * request already crosses to the thread pool and back, and FileHandle adds its own bookkeeping.
 */
function call<T>(start: (cb: (err: Error | null, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) =>
    start((err, value) => (err ? reject(err) : resolve(value as T))),
  );
}
