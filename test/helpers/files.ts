import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

/** Writes a file and fsyncs it: once this returns, the volume has promised it is durable. */
export function writeDurably(file: string, data: Buffer): void {
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
