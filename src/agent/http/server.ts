/**
 * The agent's HTTP server (docs/http.md): the API, the dashboard and /metrics on `http.port`. TLS with
 * the node's certificate (made by `cvserver init`) or the admin's, on the node's addresses and loopback;
 * plain HTTP only on 127.0.0.1. Requests are routed and checked by routes.ts (pure) and carried out by
 * the socket's own handler (api.ts): one schema, one code path for writes.
 */
import { readFileSync } from 'node:fs';
import {
  createServer as createHttp,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttps } from 'node:https';
import { join } from 'node:path';
import { fullNodes } from '../../cluster/config.ts';
import { errorMessage, UserError } from '../../lib/errors.ts';
import type { Agent } from '../agent.ts';
import { AGENT_VERSION } from '../agent.ts';
import { handleAgentRequest } from '../api.ts';
import { localVolumeCounters } from '../resources.ts';
import { clusterStatus } from '../status.ts';
import { bearerToken, FailureLimiter } from './auth.ts';
import { renderMetrics } from './metrics.ts';
import { type HttpError, type Route, route, selectFrom, UI_FILES } from './routes.ts';
import { EventStreamHub } from './sse.ts';
import { allows, type TokenRecord, tokensOf } from './tokens.ts';

const MAX_BODY = 64 * 1024;
const UI_DIR = join(import.meta.dirname, 'ui');
const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};

export interface HttpHandle {
  urls: string[];
  close(): Promise<void>;
}

/** Starts serving; an address that cannot be bound is logged as an event and skipped (the agent runs on). */
export async function startHttpServer(agent: Agent): Promise<HttpHandle | undefined> {
  const h = agent.boot.http;
  if (!h.enabled) return undefined;
  const tls = h.tls
    ? {
        cert: readFileSync(h.cert_file ?? join(agent.boot.tls_dir, `${agent.o.node}.crt`)),
        key: readFileSync(h.key_file ?? join(agent.boot.tls_dir, `${agent.o.node}.key`)),
      }
    : undefined;
  const addresses = tls ? [...new Set([...agent.me.addresses, '127.0.0.1'])] : ['127.0.0.1'];
  const hub = new EventStreamHub({
    status: () => clusterStatus(agent, false),
    events: async (limit, since) => (await agent.store.events(limit, 2000, since)).events,
  });
  const limiter = new FailureLimiter();
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    serve(agent, hub, limiter, req, res).catch((err: unknown) => {
      agent.log.warn({ event: 'http', url: req.url, err: errorMessage(err) }, 'http request failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  };
  const servers: Server[] = [];
  const urls: string[] = [];
  for (const address of addresses) {
    const server = tls ? createHttps({ ...tls, minVersion: 'TLSv1.2' }, handler) : createHttp(handler);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(h.port, address, () => resolve());
      });
      servers.push(server);
      urls.push(`${tls ? 'https' : 'http'}://${address}:${h.port}/`);
    } catch (err) {
      agent.operatorEvent(`HTTP API not served on ${address}:${h.port}: ${errorMessage(err)}`);
    }
  }
  agent.log.info({ event: 'http', urls }, 'HTTP API, dashboard and /metrics served');
  return {
    urls,
    close: async () => {
      hub.close();
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((r) => {
              s.close(() => r());
              s.closeAllConnections();
            }),
        ),
      );
    },
  };
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

function sendError(res: ServerResponse, e: HttpError, headers: Record<string, string> = {}): void {
  sendJson(res, e.status, e.field ? { error: e.error, field: e.field } : { error: e.error }, {
    ...(e.allow ? { allow: e.allow } : {}),
    ...headers,
  });
}

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        resolve(undefined);
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Read on each request (three small files): an upgraded release serves its own at once. */
function uiFile(file: string): Buffer {
  return readFileSync(join(UI_DIR, file));
}

async function serve(
  agent: Agent,
  hub: EventStreamHub,
  limiter: FailureLimiter,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x');
  const method = req.method ?? 'GET';
  const h = agent.boot.http;
  const publicPath = UI_FILES[url.pathname] !== undefined || (url.pathname === '/metrics' && !h.metrics_auth);
  let token: TokenRecord | undefined;
  if (!publicPath) {
    const address = req.socket.remoteAddress ?? '?';
    const now = Date.now();
    const wait = limiter.blockedFor(address, now);
    if (wait > 0)
      return sendError(
        res,
        {
          kind: 'error',
          status: 429,
          error: `too many failed authentications from ${address}: try again in ${wait} s`,
          field: 'authorization',
        },
        { 'retry-after': String(wait) },
      );
    const presented = bearerToken(req.headers.authorization);
    if (presented === null)
      return sendError(
        res,
        {
          kind: 'error',
          status: 401,
          error: 'no token: send Authorization: Bearer <token> (cvserver token create)',
          field: 'authorization',
        },
        { 'www-authenticate': 'Bearer' },
      );
    try {
      token =
        presented === undefined
          ? undefined
          : await tokensOf(agent.store.client, agent.spec.cluster).verify(presented);
    } catch (err) {
      return sendJson(res, 503, { error: `cannot read the tokens from etcd now: ${errorMessage(err)}` });
    }
    if (!token) {
      limiter.fail(address, now);
      return sendError(
        res,
        { kind: 'error', status: 401, error: 'unknown or revoked token', field: 'authorization' },
        { 'www-authenticate': 'Bearer error="invalid_token"' },
      );
    }
  }
  const body = method === 'POST' || method === 'PUT' || method === 'PATCH' ? await readBody(req) : '';
  if (body === undefined)
    return sendError(res, {
      kind: 'error',
      status: 413,
      error: `body: larger than ${MAX_BODY} bytes`,
      field: 'body',
    });
  const r: Route = route(
    { method, path: url.pathname, query: url.searchParams, body },
    {
      vservers: Object.keys(agent.spec.vservers),
      fullNodes: fullNodes(agent.spec),
      backups: Object.keys(agent.spec.backups),
    },
    `token ${token?.name ?? '?'}`,
  );
  switch (r.kind) {
    case 'error':
      return sendError(res, r);
    case 'static': {
      const ext = r.file.split('.').pop() ?? '';
      res.writeHead(200, {
        'content-type': TYPES[ext] ?? 'application/octet-stream',
        'cache-control': 'no-cache',
        'x-content-type-options': 'nosniff',
        'x-frame-options': 'DENY',
        'content-security-policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
      });
      res.end(uiFile(r.file));
      return;
    }
    case 'metrics': {
      const cpu = process.cpuUsage();
      const text = renderMetrics(
        await clusterStatus(agent, false),
        {
          cpuUserSeconds: cpu.user / 1e6,
          cpuSystemSeconds: cpu.system / 1e6,
          residentBytes: process.memoryUsage.rss(),
          startTimeSeconds: Math.round((Date.now() - process.uptime() * 1000) / 1000),
          version: AGENT_VERSION,
        },
        await localVolumeCounters(agent.o.stateDir).catch(() => []),
      );
      res.writeHead(200, {
        'content-type': 'text/plain; version=0.0.4; charset=utf-8',
        'cache-control': 'no-store',
      });
      res.end(text);
      return;
    }
    case 'whoami':
      return sendJson(res, 200, { name: token!.name, scope: token!.scope, node: agent.o.node });
    case 'stream':
      await hub.add(res);
      return;
    case 'api': {
      if (!allows(token!.scope, r.scope))
        return sendJson(res, 403, {
          error: `token ${token!.name} has scope ${token!.scope}: this needs ${r.scope}`,
          field: 'scope',
        });
      if (r.refuse) return sendError(res, r.refuse);
      try {
        const result = await handleAgentRequest(agent, r.req);
        const picked = selectFrom(result as { nodes: unknown[]; vservers: { name: string }[] }, r.select);
        if (picked === undefined) return sendJson(res, 404, { error: 'no such vserver', field: 'vserver' });
        return sendJson(res, 200, picked);
      } catch (err) {
        // A refusal (UserError: this agent does not act, a name taken) is the caller's to fix; anything
        // else (etcd away) may pass.
        if (err instanceof UserError) return sendJson(res, 409, { error: err.message });
        return sendJson(res, 503, { error: `not done: ${errorMessage(err)}` });
      }
    }
  }
}
