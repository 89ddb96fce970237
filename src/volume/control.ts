/**
 * The volume daemon's control socket (`run/control.sock`, root only): the CLI asks a running daemon to
 * promote, demote, verify, resolve a split-brain, re-read its settings or stop. One JSON request per connection, one JSON
 * line back. Requests are validated like any other input: a bad one gets an error reply, never a crash.
 */
import { chmodSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { z } from 'zod';
import { UserError } from '../lib/errors.ts';

export const controlRequestSchema = z.discriminatedUnion('op', [
  z.strictObject({
    op: z.literal('promote'),
    epoch: z.number().int().positive().optional(),
    force: z.boolean().optional(),
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
export type ControlReply = { ok: true; result: unknown } | { ok: false; error: string };
export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

const MAX_REQUEST = 64 * 1024;

export async function serveControl(path: string, handle: ControlHandler): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((sock) => {
    let buf = '';
    let answered = false;
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: string) => {
      if (answered) return;
      buf += chunk;
      if (buf.length > MAX_REQUEST) return reply({ ok: false, error: 'request too large' });
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.pause();
      let req: ControlRequest;
      try {
        req = controlRequestSchema.parse(JSON.parse(buf.slice(0, nl)));
      } catch (err) {
        return reply({ ok: false, error: `bad control request: ${(err as Error).message.split('\n')[0]}` });
      }
      handle(req).then(
        (result) => reply({ ok: true, result: result ?? null }),
        (err: unknown) => reply({ ok: false, error: err instanceof Error ? err.message : String(err) }),
      );
    });
    function reply(r: ControlReply): void {
      answered = true;
      sock.end(`${JSON.stringify(r)}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

/** Sends one request to a daemon; a refusal comes back as a UserError with the daemon's reason. */
export async function callControl(path: string, req: ControlRequest, timeoutMs = 60_000): Promise<unknown> {
  const text = await new Promise<string>((resolve, reject) => {
    const sock = connect(path);
    let out = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new UserError(`volume daemon did not answer "${req.op}" within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => (out += d));
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(new UserError(`cannot reach the volume daemon at ${path}: ${err.message}`));
    });
    sock.on('end', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
  let r: ControlReply;
  try {
    r = JSON.parse(text) as ControlReply;
  } catch {
    throw new UserError(`volume daemon sent an unreadable reply to "${req.op}"`);
  }
  if (!r.ok) throw new UserError(r.error);
  return r.result;
}
