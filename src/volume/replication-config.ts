/**
 * A replicated volume's configuration: `<volume dir>/replication.yaml`. Written by
 * `volume create --node ... --listen ... --peer ...` (or by hand, or later by the cluster agent) and
 * read by the volume daemon at start. Its absence means a local, unreplicated volume.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { z } from 'zod';
import { loadYamlFile } from '../lib/config.ts';
import { errnoCode, UserError } from '../lib/errors.ts';
import { writeFileAtomic } from '../lib/json-file.ts';
import { parseSizeOrThrow } from '../lib/size.ts';

export const REPLICATION_CONFIG_FILE = 'replication.yaml';
/** Shared secrets shorter than this are refused: they would be guessable offline from one handshake. */
export const MIN_SECRET_BYTES = 16;

const nodeName = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/, 'expected a node name (a-z, 0-9, _ . -)');
const address = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected HOST:PORT')
  .refine((a) => {
    const port = Number(a.slice(a.lastIndexOf(':') + 1));
    return port > 0 && port < 65536;
  }, 'port must be 1-65535');

export const replicationConfigSchema = z
  .strictObject({
    /** This replica's node name, as its peers know it. */
    node: nodeName,
    /** Where this replica's server listens for the primary (HOST:PORT). */
    listen: address,
    /** File holding the cluster's shared secret (mode 0600, at least 16 bytes). */
    secretFile: z.string().min(1),
    peers: z
      .array(
        z.strictObject({
          node: nodeName,
          address,
          /** A diskless tiebreaker: votes for quorum, stores no data. */
          tiebreaker: z.boolean().default(false),
        }),
      )
      .min(1)
      .max(3),
    quorum: z.enum(['suspend-io', 'io-error', 'off']).default('suspend-io'),
    afterSplitBrain: z
      .enum(['disconnect', 'discard-zero-changes', 'discard-younger-primary', 'discard-least-changes'])
      .default('disconnect'),
    /**
     * As a secondary, write each replicated block with O_DSYNC and acknowledge it once durable, so
     * the primary's FSYNC needs no round trip here. false: plain writes, one fdatasync per FLUSH
     * (for disks where a FUA write costs a whole cache flush, e.g. rotating disks).
     */
    durableWrites: z.boolean().default(true),
    /** Resync bandwidth cap ("50M" per second), 0 = unlimited. */
    resyncRate: z.union([z.number().int().nonnegative(), z.string()]).default(0),
  })
  .superRefine((c, ctx) => {
    const names = [c.node, ...c.peers.map((p) => p.node)];
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) ctx.addIssue({ code: 'custom', path: ['peers'], message: `node "${dup}" appears twice` });
    if (c.peers.filter((p) => p.tiebreaker).length > 1)
      ctx.addIssue({ code: 'custom', path: ['peers'], message: 'at most one tiebreaker' });
    if (typeof c.resyncRate === 'string') {
      try {
        parseSizeOrThrow(c.resyncRate, 'resyncRate');
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['resyncRate'], message: (err as Error).message });
      }
    }
  });

export type ReplicationConfigFile = z.infer<typeof replicationConfigSchema>;

export function replicationConfigPath(volumeDir: string): string {
  return join(volumeDir, REPLICATION_CONFIG_FILE);
}

/** The volume's replication config, or undefined for a local volume. Errors name file:line:field. */
export function readReplicationConfig(volumeDir: string): ReplicationConfigFile | undefined {
  const file = replicationConfigPath(volumeDir);
  try {
    statSync(file);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  return loadYamlFile(file, replicationConfigSchema);
}

export function writeReplicationConfig(volumeDir: string, c: ReplicationConfigFile): void {
  writeFileAtomic(replicationConfigPath(volumeDir), stringify(c));
}

export function resyncRateBytes(c: ReplicationConfigFile): number {
  return typeof c.resyncRate === 'number' ? c.resyncRate : parseSizeOrThrow(c.resyncRate, 'resyncRate');
}

/** Reads the shared secret; refuses a file others can read or one too short to be a secret. */
export function readSecret(file: string): Buffer {
  let st: ReturnType<typeof statSync>;
  let secret: Buffer;
  try {
    st = statSync(file);
    secret = readFileSync(file);
  } catch (err) {
    throw new UserError(`secret file ${file}: cannot read (${errnoCode(err) ?? (err as Error).message})`);
  }
  if ((st.mode & 0o077) !== 0)
    throw new UserError(
      `secret file ${file}: mode ${(st.mode & 0o777).toString(8)} lets others read it (expected 600: chmod 600 ${file})`,
    );
  const trimmed = Buffer.from(secret.toString('utf8').trim(), 'utf8');
  if (trimmed.length < MIN_SECRET_BYTES)
    throw new UserError(
      `secret file ${file}: ${trimmed.length} bytes, expected at least ${MIN_SECRET_BYTES} (e.g. head -c 32 /dev/urandom | base64 > ${file})`,
    );
  return trimmed;
}

/** "n2=10.0.0.2:7789" → {node, address}, for the command line. */
export function parsePeerFlag(flag: string, value: string): { node: string; address: string } {
  const eq = value.indexOf('=');
  const node = value.slice(0, eq);
  const addr = value.slice(eq + 1);
  if (eq <= 0 || !nodeName.safeParse(node).success || !address.safeParse(addr).success)
    throw new UserError(`${flag} "${value}": expected NODE=HOST:PORT (e.g. node2=10.0.0.2:7789)`);
  return { node, address: addr };
}

export function splitAddress(a: string): { host: string; port: number } {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(a.slice(i + 1)) };
}

/** Settings a running daemon takes over at once (`volume adjust`); the others need `down` + `up`. */
export const LIVE_SETTINGS = ['quorum', 'afterSplitBrain', 'resyncRate'] as const;
export type LiveSetting = (typeof LIVE_SETTINGS)[number];

export interface AdjustPlan {
  /** Live settings that differ: the daemon applies them now. */
  apply: Array<{ setting: LiveSetting; from: string; to: string }>;
  /** Peers that join or leave the volume: the daemon connects to or forgets them now. */
  peersAdded: string[];
  peersRemoved: string[];
  /** Settings that differ but are read only at start (identity, addresses, secret, write mode). */
  atRestart: string[];
}

/**
 * What `volume adjust` does with a changed replication.yaml, given what the daemon runs with
 * (pure). Rates compare by value: "100M" and 104857600 are the same setting. A peer that joins or
 * leaves applies at once; a known peer whose address or kind changed waits for a restart.
 */
export function planAdjust(running: ReplicationConfigFile, wanted: ReplicationConfigFile): AdjustPlan {
  const show = (c: ReplicationConfigFile, k: LiveSetting): string =>
    k === 'resyncRate' ? String(resyncRateBytes(c)) : String(c[k]);
  const apply = LIVE_SETTINGS.filter((k) => show(running, k) !== show(wanted, k)).map((setting) => ({
    setting,
    from: show(running, setting),
    to: show(wanted, setting),
  }));
  const atRestart: string[] = [];
  for (const k of ['node', 'listen', 'secretFile', 'durableWrites'] as const)
    if (running[k] !== wanted[k]) atRestart.push(k);
  const before = new Map(running.peers.map((p) => [p.node, p]));
  const after = new Map(wanted.peers.map((p) => [p.node, p]));
  const peersAdded = wanted.peers.filter((p) => !before.has(p.node)).map((p) => p.node);
  const peersRemoved = running.peers.filter((p) => !after.has(p.node)).map((p) => p.node);
  const moved = wanted.peers.some((p) => {
    const was = before.get(p.node);
    return was !== undefined && (was.address !== p.address || was.tiebreaker !== p.tiebreaker);
  });
  if (moved) atRestart.push('peers');
  return { apply, peersAdded, peersRemoved, atRestart };
}

/** The running peer set after an adjust: joined and left peers applied, moved ones kept as they run. */
export function peersInForce(
  running: ReplicationConfigFile,
  wanted: ReplicationConfigFile,
): ReplicationConfigFile['peers'] {
  const keep = new Set(wanted.peers.map((p) => p.node));
  const known = new Set(running.peers.map((p) => p.node));
  return [
    ...running.peers.filter((p) => keep.has(p.node)),
    ...wanted.peers.filter((p) => !known.has(p.node)),
  ];
}
