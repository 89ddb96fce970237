import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { errnoCode, UserError } from '../lib/errors.ts';

/** The on-disk format this code writes; older ones are upgraded, newer ones refused. */
export const METADATA_FORMAT_VERSION = 1;
export const BLOCK_SIZE = 4096;

/** Generation identifiers (DRBD-style): 64-bit random values as 16 hex digits, "0" for none. */
const generationId = z.string().regex(/^[0-9a-f]{1,16}$/);
const generation = z.strictObject({
  current: generationId,
  bitmap: generationId,
  history: z.array(generationId).max(8),
});

export const metadataSchema = z.strictObject({
  formatVersion: z.literal(METADATA_FORMAT_VERSION),
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/),
  uuid: z.uuid(),
  size: z.number().int().positive().multipleOf(BLOCK_SIZE),
  blockSize: z.literal(BLOCK_SIZE),
  createdAt: z.string(),
  /** Current, bitmap and history identifiers; replication decides who syncs from whom with them. */
  generation,
  /** Disk state as the last clean writer left it. */
  diskState: z.enum(['UpToDate', 'Outdated', 'Inconsistent', 'Diskless']),
  /** Highest promotion epoch (fencing token) this replica has seen; lower ones are refused. */
  epoch: z.number().int().nonnegative(),
  /** Set while a daemon has the volume open as primary; still set after a crash (activity log replay). */
  primaryOpen: z.boolean(),
  /** The generation of the newest primary this replica heard from (replication's `witnessed`). */
  witnessed: generation.optional(),
  /** The generation in which it last acknowledged anything as primary (replication's `lastAcked`). */
  lastAcked: generationId.optional(),
});

export type VolumeMetadata = z.infer<typeof metadataSchema>;

export const METADATA_FILE = 'meta.json';
export const DATA_FILE = 'data';

export function newMetadata(name: string, size: number): VolumeMetadata {
  return {
    formatVersion: METADATA_FORMAT_VERSION,
    name,
    uuid: randomUUID(),
    size,
    blockSize: BLOCK_SIZE,
    createdAt: new Date().toISOString(),
    generation: { current: '0', bitmap: '0', history: [] },
    diskState: 'UpToDate',
    epoch: 0,
    primaryOpen: false,
  };
}

/** Reads and validates a volume's metadata file; every failure is a one-line UserError naming the file. */
export function readMetadata(dir: string): VolumeMetadata {
  const file = join(dir, METADATA_FILE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw new UserError(`${file}: metadata file is missing`);
    throw new UserError(`${file}: cannot read metadata: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new UserError(`${file}: metadata is corrupt (not valid JSON)`);
  }
  const version = (raw as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof version === 'number' && version > METADATA_FORMAT_VERSION) {
    throw new UserError(
      `${file}: metadata format version ${version} is newer than this cvserver understands (${METADATA_FORMAT_VERSION}); upgrade cvserver`,
    );
  }
  const parsed = metadataSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UserError(
      `${file}: metadata is corrupt: ${issue.path.join('.') || '(top level)'}: ${issue.message}`,
    );
  }
  return parsed.data;
}

/** Writes metadata atomically and durably: temp file, fsync, rename, fsync the directory. */
export function writeMetadata(dir: string, meta: VolumeMetadata): void {
  const file = join(dir, METADATA_FILE);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(metadataSchema.parse(meta), null, 2)}\n`);
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dfd = openSync(dirname(file), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Read-modify-write of the metadata file. */
export function updateMetadata(
  dir: string,
  change: (meta: VolumeMetadata) => VolumeMetadata,
): VolumeMetadata {
  const next = change(readMetadata(dir));
  writeMetadata(dir, next);
  return next;
}
