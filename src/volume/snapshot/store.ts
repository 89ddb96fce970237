/**
 * One snapshot's files (format.ts): creating them durably, loading them after a restart (checking
 * what a crash may have left half-written), keeping chunks' old contents in batches made durable by
 * one fdatasync each, reading a slot back, and its space on disk. No copy-on-write decisions here
 * (plan.ts, snapshots.ts).
 */
import {
  close,
  closeSync,
  constants,
  fdatasync,
  fstat,
  fsyncSync,
  mkdirSync,
  open,
  openSync,
  read,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statfsSync,
  truncateSync,
  write,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { crc32 } from 'node:zlib';
import { allocAlignedBuffers, isDirectIoAligned } from '../../lib/aligned-buffers.ts';
import {
  type BlockMap,
  COPIES_FILE,
  chunkLength,
  decodeV1Map,
  encodeRecord,
  loadBlockMap,
  MAX_BATCH,
  RECORD_BLOCK_SIZE,
  RECORD_SIZE,
  recordOffset,
  SLOTS_PER_SEGMENT,
  SNAPSHOT_FORMAT_VERSION,
  SNAPSHOT_INFO_FILE,
  type SnapshotInfo,
  segmentSize,
  slotOffset,
  snapshotInfoSchema,
  V1_COW_FILE,
  V1_MAP_FILE,
} from './format.ts';

const openAsync = promisify(open);
const closeAsync = promisify(close);
const writeAsync = promisify(write);
const readAsync = promisify(read);
const fstatAsync = promisify(fstat);
const fdatasyncAsync = promisify(fdatasync);

/**
 * The copies file is written with zeros this far ahead of its last slot. A copy into blocks the
 * file already has costs one flush at its fdatasync; into a hole or past the end, the allocation
 * is metadata and the fdatasync also commits the host filesystem's journal (measured on ext4:
 * 0.39 ms against 0.80 ms per 64 KiB copy with its record).
 */
const ZERO_AHEAD = 8 * 1024 * 1024;
/** Zeros written per step (direct I/O: no dirty pages for a batch's fdatasync to write back). */
const ZERO_STEP = 4 * 1024 * 1024;
/** Free space the filesystem keeps beside the zeros ahead. */
const ZERO_RESERVE = 256 * 1024 * 1024;
/** Batches this small write from the event loop (a page-cache copy, microseconds): no thread-pool trips. */
const INLINE_BATCH = 4;

let zeroBuffer: Buffer | undefined;

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A copy waiting for its batch. */
interface Pending {
  slot: number;
  chunk: number;
  data: Buffer;
  done: (err?: unknown) => void;
}

export class SnapshotStore {
  readonly dir: string;
  readonly info: SnapshotInfo;
  readonly map: BlockMap;
  private readonly fd: number;
  /** The same file opened O_DIRECT for the zeros ahead; undefined where the filesystem has none. */
  private readonly directFd: number | undefined;
  /** Record blocks by segment, as on disk once the batch writing them is durable. */
  private readonly recordBlocks: Map<number, Buffer>;
  /** Copies waiting for the next batch, and the loop writing batches (one batch at a time). */
  private readonly queue: Pending[] = [];
  private writer: Promise<void> | undefined;
  /** The file holds blocks (data or zeros) up to here; zeros being written from `zeroing.from`. */
  private zeroedEnd: number;
  private zeroing: { from: number; done: Promise<void> } | undefined;
  private closed = false;
  /** Appends and reads in progress; close() waits for them. */
  private busy = 0;
  private idle: (() => void) | undefined;
  /** Batches (one fdatasync each) and copies so far (tests). */
  readonly stats = { batches: 0, copies: 0 };

  private constructor(
    dir: string,
    info: SnapshotInfo,
    map: BlockMap,
    fds: { fd: number; directFd: number | undefined },
    blocks: Map<number, Buffer>,
    fileSize: number,
  ) {
    this.dir = dir;
    this.info = info;
    this.map = map;
    this.fd = fds.fd;
    this.directFd = fds.directFd;
    this.recordBlocks = blocks;
    this.zeroedEnd = fileSize;
  }

  /**
   * Makes the snapshot's files under a temporary name, fsyncs them, then renames the directory: a
   * crash leaves either no snapshot or a whole one (no records: it reads as the live volume).
   */
  static async create(dir: string, info: SnapshotInfo): Promise<SnapshotStore> {
    return SnapshotStore.commit(await SnapshotStore.prepare(dir, info), dir, info);
  }

  /** The snapshot's files, durable, under the temporary name (nothing refers to them yet). */
  static async prepare(dir: string, info: SnapshotInfo): Promise<string> {
    const tmp = `${dir}.creating`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    try {
      writeFileSync(
        join(tmp, SNAPSHOT_INFO_FILE),
        `${JSON.stringify(snapshotInfoSchema.parse(info), null, 2)}\n`,
      );
      const copies = join(tmp, COPIES_FILE);
      writeFileSync(copies, '');
      // The first copies then go into blocks the file has (outside the caller's freeze).
      if (roomForZeros(tmp)) await writeZeros(copies, 0, ZERO_AHEAD).catch(() => truncateSync(copies, 0));
      for (const f of [SNAPSHOT_INFO_FILE, COPIES_FILE]) fsyncPath(join(tmp, f));
      fsyncPath(tmp);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
    return tmp;
  }

  /** Makes a prepared snapshot the snapshot `dir` (a rename, durable) and opens it. */
  static async commit(tmp: string, dir: string, info: SnapshotInfo): Promise<SnapshotStore> {
    try {
      renameSync(tmp, dir);
      fsyncPath(dirname(dir));
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
    return SnapshotStore.open(dir, { uuid: info.volumeUuid, size: info.size });
  }

  /**
   * Loads a snapshot; an error names the file and what is wrong with it. The records of the last
   * batch a crash may have cut are checked against their slots' data; a failed one is erased
   * (durably) before any new copy. A format-1 snapshot is converted first.
   */
  static async open(dir: string, volume: { uuid: string; size: number }): Promise<SnapshotStore> {
    let info = readInfo(dir);
    if (info.volumeUuid !== volume.uuid || info.size !== volume.size)
      throw new Error(
        `${join(dir, SNAPSHOT_INFO_FILE)}: taken of volume ${info.volumeUuid} (${info.size} bytes), not of this one (${volume.uuid}, ${volume.size} bytes)`,
      );
    if (info.formatVersion === 1) info = convertV1(dir, info);
    for (const old of [V1_COW_FILE, V1_MAP_FILE]) rmSync(join(dir, old), { force: true });
    const file = join(dir, COPIES_FILE);
    const fd = await openAsync(file, constants.O_RDWR);
    let directFd: number | undefined;
    try {
      const { chunkSize, size } = info;
      const fileSize = (await fstatAsync(fd)).size;
      const blocks = readRecordBlocks(fd, fileSize, chunkSize);
      const { map, bad } = loadBlockMap(
        Buffer.concat([...blocks.values()]),
        size,
        chunkSize,
        (slot, length) => {
          const data = Buffer.alloc(length);
          readAllSync(fd, data, slotOffset(slot, chunkSize));
          return data;
        },
      );
      if (bad.length > 0) {
        for (const slot of bad) {
          const i = slot % SLOTS_PER_SEGMENT;
          const block = blockOf(blocks, Math.floor(slot / SLOTS_PER_SEGMENT));
          block.fill(0, i * RECORD_SIZE, (i + 1) * RECORD_SIZE);
          writeAllSync(fd, block, recordOffset(slot - i, chunkSize));
        }
        fsyncSync(fd);
      }
      directFd = await openAsync(file, constants.O_RDWR | constants.O_DIRECT).catch(() => undefined);
      return new SnapshotStore(dir, info, map, { fd, directFd }, blocks, fileSize);
    } catch (err) {
      await closeAsync(fd);
      if (directFd !== undefined) await closeAsync(directFd);
      throw new Error(`${file}: ${(err as Error).message}`);
    }
  }

  get name(): string {
    return this.info.name;
  }

  /**
   * Keeps `data` (the old contents of `chunk`) in the next slot; resolves once it and its record
   * are durable (its batch's fdatasync). Only then is the chunk marked as held. Copies asked for
   * while a batch is being written go together into the next one.
   */
  async append(chunk: number, data: Buffer): Promise<void> {
    await this.guard(async () => {
      const slot = this.map.nextSlot++;
      await new Promise<void>((resolve, reject) => {
        this.queue.push({ slot, chunk, data, done: (err) => (err ? reject(err) : resolve()) });
        this.writer ??= this.writeBatches();
      });
      this.map.slots[chunk] = slot;
      this.map.copied++;
    });
  }

  /** `length` bytes of a slot from `within` on. */
  async readSlot(slot: number, within: number, length: number, into: Buffer, at: number): Promise<void> {
    await this.guard(async () => {
      const position = slotOffset(slot, this.info.chunkSize) + within;
      for (let done = 0; done < length; ) {
        const { bytesRead: n } = await readAsync(this.fd, into, at + done, length - done, position + done);
        if (n === 0) {
          into.fill(0, at + done, at + length);
          break;
        }
        done += n;
      }
    });
  }

  /** Bytes the copies file takes on disk (the copies, their records, the zeros ahead), and chunks copied. */
  async space(): Promise<{ cowBytes: number; chunksCopied: number; bytesCopied: number }> {
    const st = await fstatAsync(this.fd);
    return {
      cowBytes: st.blocks * 512,
      chunksCopied: this.map.copied,
      bytesCopied: this.map.copied * this.info.chunkSize,
    };
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Stops new work, waits for what runs, closes the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.busy > 0) await new Promise<void>((r) => (this.idle = r));
    await this.zeroing?.done;
    await closeAsync(this.fd);
    if (this.directFd !== undefined) await closeAsync(this.directFd);
  }

  /** Closes and deletes the snapshot's files. */
  async remove(): Promise<void> {
    await this.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Writes batches until no copy waits; a batch starts only once the one before is durable. */
  private async writeBatches(): Promise<void> {
    // Copies asked for in the same turn of the event loop (one write's chunks) join the first batch.
    await Promise.resolve();
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, MAX_BATCH);
        try {
          await this.writeBatch(batch);
          for (const p of batch) p.done();
        } catch (err) {
          for (const p of batch) p.done(err);
        }
      }
    } finally {
      this.writer = undefined;
    }
  }

  /** The batch's data and records (consecutive slots), then one fdatasync. */
  private async writeBatch(batch: Pending[]): Promise<void> {
    const { chunkSize } = this.info;
    const last = batch[batch.length - 1]!.slot;
    const zeroing = this.zeroing;
    if (zeroing && slotOffset(last, chunkSize) + chunkSize > zeroing.from) await zeroing.done;
    const writes: Array<{ buf: Buffer; at: number }> = [];
    for (const p of batch) writes.push({ buf: p.data, at: slotOffset(p.slot, chunkSize) });
    const touched = new Set<number>();
    for (const p of batch) {
      const segment = Math.floor(p.slot / SLOTS_PER_SEGMENT);
      encodeRecord(p.slot, p.chunk, crc32(p.data)).copy(
        blockOf(this.recordBlocks, segment),
        (p.slot % SLOTS_PER_SEGMENT) * RECORD_SIZE,
      );
      touched.add(segment);
    }
    // Whole record blocks: the page cache has nothing to read first; the records already there
    // are rewritten as they are.
    for (const s of touched) writes.push({ buf: this.recordBlocks.get(s)!, at: s * segmentSize(chunkSize) });
    if (batch.length <= INLINE_BATCH) for (const w of writes) writeAllSync(this.fd, w.buf, w.at);
    else await Promise.all(writes.map((w) => writeAll(this.fd, w.buf, w.at)));
    await fdatasyncAsync(this.fd);
    this.stats.batches++;
    this.stats.copies += batch.length;
    // Zeros ahead pay off for small batches (a copy's latency is one flush, and the journal commit
    // an allocation adds would double it); large ones are bandwidth-bound, the commit is shared by
    // the batch, and writing zeros first would double what they write (1 MiB sequential writes
    // measured 67-94 MB/s with zeros ahead, 99-151 MB/s without).
    if (batch.length <= INLINE_BATCH) this.zeroAhead();
  }

  /** Starts writing zeros past the last slot when the file holds less than ZERO_AHEAD beyond it. */
  private zeroAhead(): void {
    if (this.directFd === undefined || this.zeroing || this.closed) return;
    const { chunkSize } = this.info;
    const used = slotOffset(this.map.nextSlot, chunkSize);
    if (this.zeroedEnd >= used + ZERO_AHEAD || !roomForZeros(this.dir)) return;
    // Never below a slot in use or queued: from the next free slot's segment on at the lowest.
    const from = roundUp(Math.max(this.zeroedEnd, used), RECORD_BLOCK_SIZE);
    const to = from + ZERO_STEP;
    const fd = this.directFd;
    const done = (async () => {
      zeroBuffer ??= allocAlignedBuffers(ZERO_STEP)[0]!;
      const zeros = zeroBuffer;
      if (!isDirectIoAligned(zeros)) return;
      for (let at = from; at < to; )
        at += await writeAsync(fd, zeros, 0, to - at, at).then((r) => r.bytesWritten);
      await fdatasyncAsync(this.fd);
      this.zeroedEnd = to;
    })()
      .catch(() => undefined) // zeros ahead are an optimisation: copies go into holes without them
      .finally(() => {
        this.zeroing = undefined;
      });
    this.zeroing = { from, done };
  }

  private async guard<T>(op: () => Promise<T>): Promise<T> {
    if (this.closed) throw new Error(`snapshot ${this.name} is closed`);
    this.busy++;
    try {
      return await op();
    } finally {
      this.busy--;
      if (this.busy === 0) this.idle?.();
    }
  }
}

function readInfo(dir: string): SnapshotInfo {
  const infoFile = join(dir, SNAPSHOT_INFO_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(infoFile, 'utf8'));
  } catch (err) {
    throw new Error(`${infoFile}: cannot read it: ${(err as Error).message}`);
  }
  const parsed = snapshotInfoSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${infoFile}: ${issue.path.join('.') || '(top level)'}: ${issue.message}`);
  }
  return parsed.data;
}

/** The record block of every segment the file reaches (a short one padded with zeros). */
function readRecordBlocks(fd: number, fileSize: number, chunkSize: number): Map<number, Buffer> {
  const blocks = new Map<number, Buffer>();
  const seg = segmentSize(chunkSize);
  for (let s = 0; s * seg < fileSize; s++) {
    const b = Buffer.alloc(RECORD_BLOCK_SIZE);
    readAllSync(fd, b, s * seg);
    blocks.set(s, b);
  }
  return blocks;
}

/**
 * Converts a format-1 snapshot (`cow` + `map`, every record durable before its write) in place:
 * the copies file is written whole and made durable, then snapshot.json says format 2 (atomic),
 * then the old files go. A crash before the switch converts again at the next load.
 */
function convertV1(dir: string, info: SnapshotInfo): SnapshotInfo {
  const { chunkSize, size } = info;
  const mapFile = join(dir, V1_MAP_FILE);
  const records = decodeV1Map(readFileSync(mapFile), Math.ceil(size / chunkSize), mapFile);
  const tmp = join(dir, `${COPIES_FILE}.converting`);
  const cow = openSync(join(dir, V1_COW_FILE), 'r');
  const out = openSync(tmp, 'w');
  try {
    const blocks = new Map<number, Buffer>();
    for (const r of records) {
      const data = Buffer.alloc(chunkLength(r.chunk, chunkSize, size));
      readAllSync(cow, data, r.slot * chunkSize);
      writeAllSync(out, data, slotOffset(r.slot, chunkSize));
      const segment = Math.floor(r.slot / SLOTS_PER_SEGMENT);
      encodeRecord(r.slot, r.chunk, crc32(data)).copy(
        blockOf(blocks, segment),
        (r.slot % SLOTS_PER_SEGMENT) * RECORD_SIZE,
      );
    }
    for (const [s, block] of blocks) writeAllSync(out, block, s * segmentSize(chunkSize));
    fsyncSync(out);
  } finally {
    closeSync(cow);
    closeSync(out);
  }
  renameSync(tmp, join(dir, COPIES_FILE));
  const next: SnapshotInfo = { ...info, formatVersion: SNAPSHOT_FORMAT_VERSION };
  const infoTmp = join(dir, `${SNAPSHOT_INFO_FILE}.converting`);
  writeFileSync(infoTmp, `${JSON.stringify(next, null, 2)}\n`);
  fsyncPath(infoTmp);
  renameSync(infoTmp, join(dir, SNAPSHOT_INFO_FILE));
  fsyncPath(dir);
  return next;
}

/** Zeros ahead only where they cannot take the last free space (a full disk drops the snapshot sooner). */
function roomForZeros(dir: string): boolean {
  try {
    const st = statfsSync(dir);
    return st.bavail * st.bsize >= ZERO_RESERVE;
  } catch {
    return false;
  }
}

/** Writes zeros over [from, to) of `file` (through the page cache: only at prepare, before use). */
async function writeZeros(file: string, from: number, to: number): Promise<void> {
  const fd = await openAsync(file, constants.O_RDWR);
  try {
    const zeros = Buffer.alloc(1024 * 1024);
    for (let at = from; at < to; )
      at += (await writeAsync(fd, zeros, 0, Math.min(zeros.length, to - at), at)).bytesWritten;
  } finally {
    await closeAsync(fd);
  }
}

/** Segment `segment`'s record block, a zeroed one if it has none yet. */
function blockOf(blocks: Map<number, Buffer>, segment: number): Buffer {
  const block = blocks.get(segment) ?? Buffer.alloc(RECORD_BLOCK_SIZE);
  blocks.set(segment, block);
  return block;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

async function writeAll(fd: number, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length; )
    done += (await writeAsync(fd, data, done, data.length - done, position + done)).bytesWritten;
}

function writeAllSync(fd: number, data: Buffer, position: number): void {
  for (let done = 0; done < data.length; )
    done += writeSync(fd, data, done, data.length - done, position + done);
}

/** Fills `into` from `position` on; past the end of the file reads zeros. */
function readAllSync(fd: number, into: Buffer, position: number): void {
  for (let done = 0; done < into.length; ) {
    const n = readSync(fd, into, done, into.length - done, position + done);
    if (n === 0) {
      into.fill(0, done);
      return;
    }
    done += n;
  }
}
