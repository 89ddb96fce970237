import { read, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import { allocAlignedBuffers } from '../lib/aligned-buffers.ts';
import { errnoCode, errorMessage } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { decodeRequest, encodeError, expectsReply, type InHeader, type Request } from './codec.ts';
import { IN_HEADER_SIZE, READ_BUFFER_SIZE, WRITE_IN_SIZE } from './protocol.ts';

const readAsync = promisify(read);
const DEFAULT_MAX_IN_FLIGHT = 16;
/** Read buffers are allocated this many at a time (one aligned allocation; untouched ones cost no RSS). */
const BUFFERS_PER_ALLOCATION = 8;

/** What the session serves; DeviceFilesystem is the one implementation. */
export interface FuseHandler {
  readonly initialised: boolean;
  handle(header: InHeader, request: Request): Promise<Buffer | null>;
}

export interface SessionOptions {
  /**
   * Concurrent reads of /dev/fuse. Each pending read holds a libuv thread, so UV_THREADPOOL_SIZE
   * must exceed this by enough for the backing file's I/O (DESIGN.md §3: the thread-pool deadlock).
   */
  readers: number;
  /**
   * Requests being served at most (default 16); readers wait while that many are. Each holds a
   * read buffer of about 1 MiB, and the kernel may have far more in flight (the loop device's
   * queue, max_background): without a cap a burst of large writes (writeback of a big file)
   * grew the daemon by one buffer per request. The kernel queues the rest.
   */
  maxInFlight?: number;
  log: Logger;
}

/**
 * Reads requests from an open /dev/fuse descriptor and writes replies. Several reads are
 * outstanding at once and requests are handled concurrently; replies go out as each completes.
 * `run` resolves when the filesystem is unmounted (ENODEV).
 */
export class FuseSession {
  private readonly fd: number;
  private readonly handler: FuseHandler;
  private readonly opts: SessionOptions;
  private readonly pool: Buffer[] = [];
  private closed = false;
  private inFlight = 0;
  private drained: (() => void) | undefined;
  /** Readers waiting for a request to finish (maxInFlight reached). */
  private readonly waitingReaders: Array<() => void> = [];

  constructor(fd: number, handler: FuseHandler, opts: SessionOptions) {
    this.fd = fd;
    this.handler = handler;
    this.opts = opts;
  }

  get requestsInFlight(): number {
    return this.inFlight;
  }

  async run(): Promise<void> {
    // One reader until INIT is answered: reads before that may fail with EPERM.
    await this.readOne();
    while (!this.closed && !this.handler.initialised) await this.readOne();
    const readers = Array.from({ length: this.opts.readers }, () => this.readerLoop());
    await Promise.all(readers);
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
  }

  private async readerLoop(): Promise<void> {
    const max = this.opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    while (!this.closed) {
      if (this.inFlight >= max) await new Promise<void>((resolve) => this.waitingReaders.push(resolve));
      else await this.readOne();
    }
  }

  private async readOne(): Promise<void> {
    const buf = this.pool.pop() ?? this.allocateBuffers();
    let n: number;
    try {
      n = (await readAsync(this.fd, buf, 0, buf.length, null)).bytesRead;
    } catch (err) {
      this.pool.push(buf);
      const code = errnoCode(err);
      if (code === 'ENODEV') {
        this.closed = true;
        return;
      }
      // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: try again;
      // EPERM: the kernel has not seen our INIT reply yet.
      if (code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN' || code === 'EPERM') {
        if (code === 'EPERM') await new Promise((r) => setTimeout(r, 5));
        return;
      }
      this.opts.log.error({ err: errorMessage(err) }, 'reading /dev/fuse failed; stopping');
      this.closed = true;
      return;
    }
    if (n === 0) {
      this.pool.push(buf);
      this.closed = true;
      return;
    }
    this.inFlight++;
    // Not awaited: the reader goes straight back to reading while this request is served.
    void this.serve(buf.subarray(0, n)).finally(() => {
      this.pool.push(buf);
      this.inFlight--;
      this.waitingReaders.shift()?.();
      if (this.inFlight === 0 && this.drained) this.drained();
    });
  }

  /**
   * Read buffers placed so that a WRITE's payload (after the in header and fuse_write_in) starts
   * on a direct-I/O boundary: the device can then write it to disk with O_DIRECT as it is, no copy.
   */
  private allocateBuffers(): Buffer {
    const bufs = allocAlignedBuffers(
      READ_BUFFER_SIZE,
      BUFFERS_PER_ALLOCATION,
      IN_HEADER_SIZE + WRITE_IN_SIZE,
    );
    const first = bufs.pop()!;
    this.pool.push(...bufs);
    return first;
  }

  private async serve(msg: Buffer): Promise<void> {
    const decoded = decodeRequest(msg);
    if (!decoded.ok) {
      this.opts.log.warn({ reason: decoded.reason }, 'malformed FUSE request');
      if (decoded.header) this.reply(encodeError(decoded.header.unique, 'EIO'));
      return;
    }
    let reply: Buffer | null;
    try {
      reply = await this.handler.handle(decoded.header, decoded.request);
    } catch (err) {
      this.opts.log.error({ op: decoded.request.op, err: errorMessage(err) }, 'request handler failed');
      reply = expectsReply(decoded.request) ? encodeError(decoded.header.unique, 'EIO') : null;
    }
    if (reply) this.reply(reply);
  }

  private reply(buf: Buffer): void {
    try {
      writeSync(this.fd, buf);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT') return; // the kernel gave up on that request (interrupted)
      if (code === 'ENODEV') {
        this.closed = true;
        return;
      }
      this.opts.log.error({ err: errorMessage(err) }, 'writing a FUSE reply failed');
    }
  }
}
