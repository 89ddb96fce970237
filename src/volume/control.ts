/**
 * The volume daemon's control socket (`run/control.sock`, root only): the CLI asks a running daemon to
 * promote, demote, verify, resolve a split-brain, re-read its settings or stop. One JSON request per connection, one JSON
 * line back. Requests are validated like any other input: a bad one gets an error reply, never a crash.
 */
import type { Server } from 'node:net';
import { z } from 'zod';
import { callRpc, serveRpc } from '../lib/unix-rpc.ts';
import type { SnapshotListing } from './snapshot/snapshots.ts';

export const controlRequestSchema = z.discriminatedUnion('op', [
  z.strictObject({
    op: z.literal('promote'),
    epoch: z.number().int().positive().optional(),
    force: z.boolean().optional(),
    /** Peers known to be down (the cluster saw their lease end): promotion does not wait to hear from them. */
    absent: z.array(z.string()).optional(),
  }),
  z.strictObject({ op: z.literal('demote') }),
  z.strictObject({ op: z.literal('verify'), peer: z.string().optional(), resync: z.boolean() }),
  z.strictObject({ op: z.literal('resolve-split-brain'), peer: z.string() }),
  z.strictObject({ op: z.literal('shutdown') }),
  /** `volume down --force`: fail writes waiting for quorum instead of waiting. */
  z.strictObject({ op: z.literal('fail-suspended-io') }),
  z.strictObject({ op: z.literal('status') }),
  /** `volume adjust`: re-read replication.yaml, apply what can change while running. */
  z.strictObject({ op: z.literal('adjust') }),
  // Snapshots (src/volume/snapshot): the CLI freezes the filesystem around snapshot-create.
  z.strictObject({ op: z.literal('snapshot-create'), name: z.string() }),
  /** Its files made durable ahead, before the freeze: the create inside the freeze is then a rename. */
  z.strictObject({ op: z.literal('snapshot-prepare'), name: z.string() }),
  z.strictObject({ op: z.literal('snapshot-list') }),
  z.strictObject({ op: z.literal('snapshot-delete'), name: z.string() }),
  /** Serve the snapshot as a read-only FUSE file (for a read-only loop device). */
  z.strictObject({ op: z.literal('snapshot-expose'), name: z.string() }),
  z.strictObject({ op: z.literal('snapshot-unexpose'), name: z.string() }),
  /** Write the snapshot's chunks back through the volume (its block device released first). */
  z.strictObject({ op: z.literal('snapshot-rollback'), name: z.string() }),
]);

/** What the snapshot operations answer (the daemon's side and the CLI's share these types). */
export interface SnapshotReplies {
  'snapshot-create': SnapshotListing & { tookMs: number };
  'snapshot-prepare': { prepared: string };
  'snapshot-list': SnapshotListing[];
  'snapshot-delete': { deleted: string };
  'snapshot-expose': { deviceFile: string };
  'snapshot-unexpose': { released: string };
  'snapshot-rollback': { bytes: number; ranges: number };
}
export type SnapshotRequest = Extract<ControlRequest, { op: keyof SnapshotReplies }>;

/** A snapshot operation, with its reply typed. */
export async function callSnapshot<R extends SnapshotRequest>(
  path: string,
  req: R,
  timeoutMs = 60_000,
): Promise<SnapshotReplies[R['op']]> {
  return (await callControl(path, req, timeoutMs)) as SnapshotReplies[R['op']];
}

export type ControlRequest = z.infer<typeof controlRequestSchema>;
export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

export function serveControl(path: string, handle: ControlHandler): Promise<Server> {
  return serveRpc(path, controlRequestSchema, handle);
}

/** Sends one request to a daemon; a refusal comes back as a UserError with the daemon's reason. */
export function callControl(path: string, req: ControlRequest, timeoutMs = 60_000): Promise<unknown> {
  return callRpc(path, req, 'volume daemon', timeoutMs);
}
