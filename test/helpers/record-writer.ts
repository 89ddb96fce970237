/**
 * A stand-in for an application inside a vserver: appends numbered records to FILE, fsyncs each one,
 * and only then logs its number to ACKLOG (outside the volume). Every number in ACKLOG is a record
 * the volume acknowledged as durable. Runs until it fails or is killed.
 *   node record-writer.ts FILE ACKLOG TAG
 */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

const [file, ackLog, tag] = process.argv.slice(2);
if (!file || !ackLog || !tag) {
  process.stderr.write('usage: record-writer.ts FILE ACKLOG TAG\n');
  process.exit(2);
}
const fd = openSync(file, 'a');
const log = openSync(ackLog, 'a');
try {
  for (let n = 0; ; n++) {
    writeSync(fd, `${tag}:${n}:${'x'.repeat(100)}\n`);
    fsyncSync(fd);
    writeSync(log, `${n}\n`);
  }
} catch (err) {
  process.stderr.write(`record-writer stopped: ${(err as Error).message}\n`);
  closeSync(log);
  process.exit(1);
}
