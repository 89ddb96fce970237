/**
 * One snapshot's files (format.ts): creating them durably, loading them after a restart, appending
 * a chunk's old contents, reading a slot back, and its space on disk. No copy-on-write decisions
 * here (plan.ts, snapshots.ts).
 */
import {
  close,
  closeSync,
  constants,
  fstat,
  fsyncSync,
  mkdirSync,
  open,
  openSync,
  read,
  readFileSync,
  renameSync,
  rmSync,
  write,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import {
  type BlockMap,
  COW_FILE,
  decodeBlockMap,
  encodeMapHeader,
  encodeMapRecord,
  MAP_FILE,
  mapRecordOffset,
  SNAPSHOT_INFO_FILE,
  type SnapshotInfo,
  snapshotInfoSchema,
} from './format.ts';

const openAsync = promisify(open);
const closeAsync = promisify(close);
const writeAsync = promisify(write);
const readAsync = promisify(read);
const fstatAsync = promisify(fstat);

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export class SnapshotStore {
  readonly dir: string;
  readonly info: SnapshotInfo;
  readonly map: BlockMap;
  /** Both opened O_DSYNC: a copy is durable when its write returns, with no fdatasync of its own. */
  private readonly cowFd: number;
  private readonly mapFd: number;
  private closed = false;
  /** Appends and reads in progress; close() waits for them. */
  private busy = 0;
  private idle: (() => void) | undefined;

  private constructor(dir: string, info: SnapshotInfo, map: BlockMap, cowFd: number, mapFd: number) {
    this.dir = dir;
    this.info = info;
    this.map = map;
    this.cowFd = cowFd;
    this.mapFd = mapFd;
  }

  /**
   * Makes the snapshot's files under a temporary name, fsyncs them, then renames the directory: a
   * crash leaves either no snapshot or a whole one (an empty map: it reads as the live volume).
   */
  static async create(dir: string, info: SnapshotInfo): Promise<SnapshotStore> {
    return SnapshotStore.commit(SnapshotStore.prepare(dir, info), dir, info);
  }

  /** The snapshot's files, durable, under the temporary name (nothing refers to them yet). */
  static prepare(dir: string, info: SnapshotInfo): string {
    const tmp = `${dir}.creating`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    try {
      writeFileSync(
        join(tmp, SNAPSHOT_INFO_FILE),
        `${JSON.stringify(snapshotInfoSchema.parse(info), null, 2)}\n`,
      );
      writeFileSync(join(tmp, MAP_FILE), encodeMapHeader(info.chunkSize));
      writeFileSync(join(tmp, COW_FILE), '');
      for (const f of [SNAPSHOT_INFO_FILE, MAP_FILE, COW_FILE]) fsyncPath(join(tmp, f));
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

  /** Loads a snapshot; an error names the file and what is wrong with it. */
  static async open(dir: string, volume: { uuid: string; size: number }): Promise<SnapshotStore> {
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
    const info = parsed.data;
    if (info.volumeUuid !== volume.uuid || info.size !== volume.size)
      throw new Error(
        `${infoFile}: taken of volume ${info.volumeUuid} (${info.size} bytes), not of this one (${volume.uuid}, ${volume.size} bytes)`,
      );
    const mapFile = join(dir, MAP_FILE);
    const map = decodeBlockMap(readFileSync(mapFile), info.size, mapFile);
    const flags = constants.O_RDWR | constants.O_DSYNC;
    const cowFd = await openAsync(join(dir, COW_FILE), flags);
    const mapFd = await openAsync(mapFile, flags).catch(async (err: unknown) => {
      await closeAsync(cowFd);
      throw err;
    });
    return new SnapshotStore(dir, info, map, cowFd, mapFd);
  }

  get name(): string {
    return this.info.name;
  }

  /**
   * Keeps `data` (the old contents of `chunk`) in the next slot: the data first, then its map
   * record, each durable when its write returns. Only then is the chunk marked as held.
   */
  async append(chunk: number, data: Buffer): Promise<void> {
    await this.guard(async () => {
      const slot = this.map.nextSlot++;
      await writeAll(this.cowFd, data, slot * this.info.chunkSize);
      await writeAll(this.mapFd, encodeMapRecord(slot, chunk), mapRecordOffset(slot));
      this.map.slots[chunk] = slot;
      this.map.copied++;
    });
  }

  /** `length` bytes of a slot from `within` on. */
  async readSlot(slot: number, within: number, length: number, into: Buffer, at: number): Promise<void> {
    await this.guard(async () => {
      const position = slot * this.info.chunkSize + within;
      for (let done = 0; done < length; ) {
        const { bytesRead: n } = await readAsync(this.cowFd, into, at + done, length - done, position + done);
        if (n === 0) {
          into.fill(0, at + done, at + length);
          break;
        }
        done += n;
      }
    });
  }

  /** Bytes the copy-on-write file takes on disk (it is sparse), and chunks copied. */
  async space(): Promise<{ cowBytes: number; chunksCopied: number; bytesCopied: number }> {
    const st = await fstatAsync(this.cowFd);
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
    await closeAsync(this.cowFd);
    await closeAsync(this.mapFd);
  }

  /** Closes and deletes the snapshot's files. */
  async remove(): Promise<void> {
    await this.close();
    rmSync(this.dir, { recursive: true, force: true });
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

async function writeAll(fd: number, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length; )
    done += (await writeAsync(fd, data, done, data.length - done, position + done)).bytesWritten;
}
