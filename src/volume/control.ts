/**
 * The volume daemon's control socket (`run/control.sock`, root only): the CLI asks a running daemon to
 * promote, demote, verify, resolve a split-brain, re-read its settings or stop. One JSON request per connection, one JSON
 * line back. Requests are validated like any other input: a bad one gets an error reply, never a crash.
 */
import type { Server } from 'node:net';
import { z } from 'zod';
import { callRpc, serveRpc } from '../lib/unix-rpc.ts';

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
]);

export type ControlRequest = z.infer<typeof controlRequestSchema>;
export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

export function serveControl(path: string, handle: ControlHandler): Promise<Server> {
  return serveRpc(path, controlRequestSchema, handle);
}

/** Sends one request to a daemon; a refusal comes back as a UserError with the daemon's reason. */
export function callControl(path: string, req: ControlRequest, timeoutMs = 60_000): Promise<unknown> {
  return callRpc(path, req, 'volume daemon', timeoutMs);
}
