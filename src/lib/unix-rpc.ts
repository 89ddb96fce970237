/**
 * A root-only request/reply service on a unix socket: one JSON request per connection, one JSON line back.
 * Requests are validated like any other input: a bad one gets an error reply, never a crash. Used by the
 * volume daemon's control socket and by the node agent's socket.
 */
import { chmodSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import type { z } from 'zod';
import { UserError } from './errors.ts';

export type RpcReply = { ok: true; result: unknown } | { ok: false; error: string };

export async function serveRpc<S extends z.ZodType>(
  path: string,
  schema: S,
  handle: (req: z.infer<S>) => Promise<unknown>,
  maxRequestBytes = 64 * 1024,
): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((sock) => {
    let buf = '';
    let answered = false;
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: string) => {
      if (answered) return;
      buf += chunk;
      if (buf.length > maxRequestBytes) return reply({ ok: false, error: 'request too large' });
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.pause();
      let req: z.infer<S>;
      try {
        req = schema.parse(JSON.parse(buf.slice(0, nl)));
      } catch (err) {
        return reply({ ok: false, error: `bad request: ${(err as Error).message.split('\n')[0]}` });
      }
      handle(req).then(
        (result) => reply({ ok: true, result: result ?? null }),
        (err: unknown) => reply({ ok: false, error: err instanceof Error ? err.message : String(err) }),
      );
    });
    function reply(r: RpcReply): void {
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

/**
 * Sends one request; a refusal comes back as a UserError with the server's reason. `who` names the
 * server in errors ("volume daemon", "node agent").
 */
export async function callRpc(
  path: string,
  req: { op: string },
  who: string,
  timeoutMs = 60_000,
): Promise<unknown> {
  const text = await new Promise<string>((resolve, reject) => {
    const sock = connect(path);
    let out = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new UserError(`${who} did not answer "${req.op}" within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => (out += d));
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(new UserError(`cannot reach the ${who} at ${path}: ${err.message}`));
    });
    sock.on('end', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
  return parseRpcReply(text, who, req.op);
}

/** A reply line's result; a refusal or an unreadable line as a UserError (also for replies relayed by a helper). */
export function parseRpcReply(text: string, who: string, op: string): unknown {
  let r: RpcReply;
  try {
    r = JSON.parse(text) as RpcReply;
  } catch {
    throw new UserError(`${who} sent an unreadable reply to "${op}"`);
  }
  if (!r.ok) throw new UserError(r.error);
  return r.result;
}
