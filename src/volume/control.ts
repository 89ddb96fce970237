/**
 * The volume daemon's control socket (`run/control.sock`, root only): the CLI and the node agent ask a
 * running daemon to promote, demote, verify, resolve a split-brain, re-read its settings, take
 * snapshots or stop. One JSON request per connection, one JSON line back. Requests are validated like
 * any other input: a bad one gets an error reply, never a crash.
 *
 * The contract is one table, `controlOperations`: each operation's request fields (a schema) and its
 * reply (a type). The daemon serves handlers typed by it and callers get typed replies from
 * callControl, so neither side casts.
 */
import type { Server } from 'node:net';
import { z } from 'zod';
import { callRpc, parseRpcReply, serveRpc } from '../lib/unix-rpc.ts';
import type { DaemonStatus } from './layout.ts';
import type { VerifyResult } from './replication/replicated-device.ts';
import type { AdjustPlan } from './replication-config.ts';
import type { SnapshotListing } from './snapshot/snapshots.ts';

/** One row of the table: the request's fields besides `op`, and (as a type only) the reply. */
interface Operation<Fields extends z.ZodRawShape, Reply> {
  fields: Fields;
  /** Never set: carries the reply's type. */
  reply?: Reply;
}

function operation<Reply>() {
  return <Fields extends z.ZodRawShape>(fields: Fields): Operation<Fields, Reply> => ({ fields });
}

export const controlOperations = {
  promote: operation<{ role: 'Primary'; epoch: number }>()({
    epoch: z.number().int().positive().optional(),
    force: z.boolean().optional(),
    /** Peers known to be down (the cluster saw their lease end): promotion does not wait to hear from them. */
    absent: z.array(z.string()).optional(),
  }),
  demote: operation<{ role: 'Secondary' }>()({}),
  verify: operation<VerifyResult[]>()({ peer: z.string().optional(), resync: z.boolean() }),
  'resolve-split-brain': operation<{ savedTo: string; bytesSaved: number }>()({ peer: z.string() }),
  shutdown: operation<{ stopped: true }>()({}),
  /** `volume down --force`: fail writes waiting for quorum instead of waiting. */
  'fail-suspended-io': operation<{ failed: number }>()({}),
  status: operation<DaemonStatus>()({}),
  /** `volume adjust`: re-read replication.yaml, apply what can change while running. */
  adjust: operation<AdjustPlan>()({}),
  // Snapshots (src/volume/snapshot): the CLI freezes the filesystem around snapshot-create.
  'snapshot-create': operation<SnapshotListing & { tookMs: number }>()({ name: z.string() }),
  /** Its files made durable ahead, before the freeze: the create inside the freeze is then a rename. */
  'snapshot-prepare': operation<{ prepared: string }>()({ name: z.string() }),
  'snapshot-list': operation<SnapshotListing[]>()({}),
  'snapshot-delete': operation<{ deleted: string }>()({ name: z.string() }),
  /** Serve the snapshot as a read-only FUSE file (for a read-only loop device). */
  'snapshot-expose': operation<{ deviceFile: string }>()({ name: z.string() }),
  'snapshot-unexpose': operation<{ released: string }>()({ name: z.string() }),
  /** Write the snapshot's chunks back through the volume (its block device released first). */
  'snapshot-rollback': operation<{ bytes: number; ranges: number }>()({ name: z.string() }),
};

type Operations = typeof controlOperations;
export type ControlOp = keyof Operations;
/** A request's fields from its row's schema (an empty row adds none). */
type FieldsOf<F extends z.ZodRawShape> = [keyof F] extends [never] ? unknown : z.infer<z.ZodObject<F>>;
export type ControlRequestOf<Op extends ControlOp> =
  Operations[Op] extends Operation<infer F, unknown> ? { op: Op } & FieldsOf<F> : never;
export type ControlRequest = { [Op in ControlOp]: ControlRequestOf<Op> }[ControlOp];
export type ControlReply<Op extends ControlOp> =
  Operations[Op] extends Operation<z.ZodRawShape, infer R> ? R : never;
/** The daemon's side of the table: one handler per operation, its request and reply typed by its row. */
export type ControlHandlers = { [Op in ControlOp]: (req: ControlRequestOf<Op>) => Promise<ControlReply<Op>> };

export const CONTROL_OPS = Object.keys(controlOperations) as ControlOp[];
export type SnapshotOp = Extract<ControlOp, `snapshot-${string}`>;
export const SNAPSHOT_OPS = CONTROL_OPS.filter((op): op is SnapshotOp => op.startsWith('snapshot-'));

const rows = Object.entries(controlOperations).map(([op, o]) =>
  z.strictObject({ op: z.literal(op), ...o.fields }),
);
// Built from the table at run time: its TypeScript type is the table's, stated once here.
const requestSchema = z.discriminatedUnion(
  'op',
  rows as [(typeof rows)[number], ...typeof rows],
) as unknown as z.ZodType<ControlRequest>;

/** Handlers that refuse `ops` with the reason `why(op)` (operations a daemon does not serve). */
export function refuseControl<Op extends ControlOp>(
  ops: Op[],
  why: (op: Op) => string,
): Pick<ControlHandlers, Op> {
  const refuse = (op: Op) => async () => {
    throw new Error(why(op));
  };
  return Object.fromEntries(ops.map((op) => [op, refuse(op)])) as unknown as Pick<ControlHandlers, Op>;
}

/**
 * Serves the socket: each request goes to its operation's handler, through `around` when given (the
 * replica daemon runs role changes one at a time).
 */
export function serveControl(
  path: string,
  handlers: ControlHandlers,
  around: (req: ControlRequest, run: () => Promise<unknown>) => Promise<unknown> = (_req, run) => run(),
): Promise<Server> {
  return serveRpc(path, requestSchema, (req) => {
    const handler = handlers[req.op] as (r: ControlRequest) => Promise<unknown>;
    return around(req, () => handler(req));
  });
}

/** Sends one request to a daemon; a refusal comes back as a UserError with the daemon's reason. */
export async function callControl<Op extends ControlOp>(
  path: string,
  req: ControlRequestOf<Op> & { op: Op },
  timeoutMs = 60_000,
): Promise<ControlReply<Op>> {
  // The reply's type is the table's promise about our own daemon: the wire itself is not checked.
  return (await callRpc(path, req, 'volume daemon', timeoutMs)) as ControlReply<Op>;
}

/** A reply line of the daemon's that another process relayed (the freeze helper's snapshot-create). */
export function decodeControlReply<Op extends ControlOp>(op: Op, line: string): ControlReply<Op> {
  // As callControl: the reply's type is the table's promise about our own daemon.
  return parseRpcReply(line, 'volume daemon', op) as ControlReply<Op>;
}
