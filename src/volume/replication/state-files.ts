/**
 * The engine's own small files (per-peer bitmaps, the activity log, own-generation, saved blocks of
 * a discarded split-brain side), behind one interface: a directory in production, memory in the
 * deterministic simulation (where async fs calls, completing in any order, would break replay, and
 * where a crash must lose what was not synced).
 */
import {
  appendFileSync,
  closeSync,
  fdatasync,
  fdatasyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  write,
  writeSync,
} from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeFileAtomic } from '../../lib/json-file.ts';

/** A file written in place at offsets (the activity log's two slots). */
export interface SlotFile {
  /** Its whole content when opened. */
  readonly initial: Buffer;
  /** Writes and syncs (fdatasync) before it resolves. */
  writeAt(offset: number, data: Buffer): Promise<void>;
  writeAtSync(offset: number, data: Buffer): void;
  close(): void;
}

export interface StateFiles {
  /** The file's content, or undefined when it does not exist. */
  read(name: string): Buffer | undefined;
  /** Replaces the content durably (temp file, fsync, rename): after a crash, old or new, never a mix. */
  replace(name: string, data: Buffer): Promise<void>;
  replaceSync(name: string, data: Buffer): void;
  /** Appends durably (synchronously: small records that must be safe before what follows). */
  appendSync(name: string, data: Buffer): void;
  /** Removes the file if it exists. */
  remove(name: string): void;
  /** Opens (creating it empty) a file written at offsets. */
  openSlots(name: string): SlotFile;
  /** Where the file lives, for messages. */
  path(name: string): string;
}

/** The files of one directory (created on first use). */
export class DirStateFiles implements StateFiles {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true });
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  read(name: string): Buffer | undefined {
    try {
      return readFileSync(this.path(name));
    } catch {
      return undefined;
    }
  }

  async replace(name: string, data: Buffer): Promise<void> {
    const file = this.path(name);
    const tmp = `${file}.tmp`;
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  }

  replaceSync(name: string, data: Buffer): void {
    writeFileAtomic(this.path(name), data);
  }

  appendSync(name: string, data: Buffer): void {
    appendFileSync(this.path(name), data);
  }

  remove(name: string): void {
    rmSync(this.path(name), { force: true });
  }

  openSlots(name: string): SlotFile {
    const file = this.path(name);
    closeSync(openSync(file, 'a+'));
    const initial = readFileSync(file);
    const fd = openSync(file, 'r+');
    const writeAsync = promisify(write);
    const syncAsync = promisify(fdatasync);
    return {
      initial,
      async writeAt(offset, data) {
        await writeAsync(fd, data, 0, data.length, offset);
        await syncAsync(fd);
      },
      writeAtSync(offset, data) {
        writeSync(fd, data, 0, data.length, offset);
        fdatasyncSync(fd);
      },
      close: () => closeSync(fd),
    };
  }
}
