/**
 * The HTTP API's routes (pure): a request (method, path, query, body text) becomes the same request the
 * unix socket takes (api.ts's schema: one for both), with the scope it needs, or a 4xx naming the
 * field. Everything is checked here, before anything is written (docs/http.md).
 */
import { z } from 'zod';
import { type AgentRequest, agentRequestSchema } from '../api.ts';
import type { Scope } from './tokens.ts';

export interface HttpRequestIn {
  method: string;
  path: string;
  query: URLSearchParams;
  body: string;
}

/** What the names in paths and bodies are checked against. */
export interface Known {
  vservers: readonly string[];
  /** Nodes that can run vservers (migrate targets, standby). */
  fullNodes: readonly string[];
  /** Vservers with a backup configuration (backup now). */
  backups: readonly string[];
}

export interface HttpError {
  kind: 'error';
  status: number;
  error: string;
  field?: string;
  allow?: string;
}

/** `select`: which part of the answer the route returns (the socket's answer is the whole status). */
export type Select = { what: 'nodes' } | { what: 'vservers' } | { what: 'vserver'; name: string };

export type Route =
  /** `refuse`: a well-formed request refused once the scope allows it (409: no backup configuration). */
  | { kind: 'api'; scope: Scope; req: AgentRequest; select?: Select; refuse?: HttpError }
  | { kind: 'whoami' }
  | { kind: 'stream' }
  | { kind: 'metrics' }
  | { kind: 'static'; file: string }
  | HttpError;

export const UI_FILES: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/ui/app.js': 'app.js',
  '/ui/style.css': 'style.css',
};

const err = (status: number, error: string, field?: string): HttpError =>
  field === undefined ? { kind: 'error', status, error } : { kind: 'error', status, error, field };

const bodies = {
  migrate: z.strictObject({ node: z.string().min(1) }),
  empty: z.strictObject({}),
  maintenance: z.strictObject({ on: z.boolean() }),
};

/** The body as JSON, checked against `schema`; an empty body is `{}`. */
function parseBody<S extends z.ZodType>(text: string, schema: S): z.infer<S> | HttpError {
  let value: unknown = {};
  if (text.trim() !== '') {
    try {
      value = JSON.parse(text);
    } catch (e) {
      return err(400, `body: not JSON (${(e as Error).message})`, 'body');
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return err(400, 'body: expected a JSON object', 'body');
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  return zodError(r.error);
}

function zodError(e: z.ZodError): HttpError {
  const issue = e.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    return err(400, `${key}: unknown field`, key);
  }
  const field = issue.path.map(String).join('.') || 'body';
  return err(400, `${field}: ${issue.message}`, field);
}

function isError(x: unknown): x is HttpError {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'error';
}

/** Query parameters: only those named, as numbers within bounds. */
function queryNumbers(
  q: URLSearchParams,
  allowed: Record<string, { min: number; max: number; int: boolean }>,
): Record<string, number> | HttpError {
  const out: Record<string, number> = {};
  for (const [k, v] of q) {
    const rule = allowed[k];
    if (!rule) return err(400, `${k}: unknown query parameter`, k);
    const n = Number(v);
    if (
      v.trim() === '' ||
      !Number.isFinite(n) ||
      (rule.int && !Number.isInteger(n)) ||
      n < rule.min ||
      n > rule.max
    )
      return err(
        400,
        `${k}: expected ${rule.int ? 'an integer' : 'a number'} from ${rule.min} to ${rule.max}`,
        k,
      );
    out[k] = n;
  }
  return out;
}

function noQuery(q: URLSearchParams): HttpError | undefined {
  for (const [k] of q) return err(400, `${k}: unknown query parameter`, k);
  return undefined;
}

/** Checked again by the socket's schema: the two can never drift apart. */
function api(scope: Scope, req: AgentRequest, select?: Select): Route | HttpError {
  const r = agentRequestSchema.safeParse(req);
  if (!r.success) return zodError(r.error);
  return select ? { kind: 'api', scope, req: r.data, select } : { kind: 'api', scope, req: r.data };
}

/** `by`: who acts, for the cluster's log (the token's name). */
export function route(r: HttpRequestIn, known: Known, by: string): Route {
  const { method, path, query } = r;
  const staticFile = UI_FILES[path];
  if (staticFile) return method === 'GET' ? { kind: 'static', file: staticFile } : notAllowed('GET');
  if (path === '/metrics')
    return method === 'GET' ? (noQuery(query) ?? { kind: 'metrics' }) : notAllowed('GET');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponentSafe);
  if (parts[0] !== 'api' || parts.some((p) => p === null)) return err(404, `no such path: ${path}`, 'path');
  const [, a, b, c, ...rest] = parts as string[];
  if (rest.length) return err(404, `no such path: ${path}`, 'path');
  const get = (make: () => Route): Route =>
    method === 'GET' ? (noQuery(query) ?? make()) : notAllowed('GET');
  const post = (make: () => Route): Route =>
    method === 'POST' ? (noQuery(query) ?? make()) : notAllowed('POST');

  if (a === 'whoami' && !b) return get(() => ({ kind: 'whoami' }));
  if (a === 'status' && !b) return get(() => api('read', { op: 'status' }));
  if (a === 'links' && !b) return get(() => api('read', { op: 'links' }));
  if (a === 'volumes' && !b) return get(() => api('read', { op: 'volumes' }));
  if (a === 'failovers' && !b) {
    if (method !== 'GET') return notAllowed('GET');
    const q = queryNumbers(query, { limit: { min: 1, max: 10_000, int: true } });
    if (isError(q)) return q;
    return api('read', q.limit === undefined ? { op: 'failovers' } : { op: 'failovers', limit: q.limit });
  }
  if (a === 'events' && !b) {
    if (method !== 'GET') return notAllowed('GET');
    const q = queryNumbers(query, {
      limit: { min: 1, max: 10_000, int: true },
      since: { min: 0, max: 1e15, int: false },
    });
    if (isError(q)) return q;
    return api('read', {
      op: 'events',
      limit: q.limit ?? 200,
      ...(q.since !== undefined ? { since: q.since } : {}),
    });
  }
  if (a === 'events' && b === 'stream' && !c) return get(() => ({ kind: 'stream' }));
  if (a === 'maintenance' && !b)
    return post(() => {
      const body = parseBody(r.body, bodies.maintenance);
      return isError(body) ? body : api('admin', { op: 'maintenance', on: body.on, by });
    });
  if (a === 'nodes') {
    if (!b) return get(() => api('read', { op: 'status', brief: true }, { what: 'nodes' }));
    if (!known.fullNodes.includes(b))
      return err(
        404,
        `no node named "${b}" that runs vservers (nodes: ${known.fullNodes.join(', ')})`,
        'node',
      );
    if (c === 'standby' || c === 'unstandby')
      return post(() => {
        const body = parseBody(r.body, bodies.empty);
        return isError(body) ? body : api('admin', { op: 'standby', node: b, on: c === 'standby', by });
      });
    return err(404, `no such path: ${path}`, 'path');
  }
  if (a === 'vservers') {
    if (!b) return get(() => api('read', { op: 'status', brief: true }, { what: 'vservers' }));
    if (!known.vservers.includes(b)) return err(404, `no vserver named "${b}" in the cluster`, 'vserver');
    if (!c) return get(() => api('read', { op: 'status', brief: true }, { what: 'vserver', name: b }));
    if (c === 'migrate')
      return post(() => {
        const body = parseBody(r.body, bodies.migrate);
        if (isError(body)) return body;
        if (!known.fullNodes.includes(body.node))
          return err(
            400,
            `node: "${body.node}" is not a node that can run vservers (nodes: ${known.fullNodes.join(', ')})`,
            'node',
          );
        return api('admin', { op: 'migrate', vserver: b, node: body.node, by });
      });
    if (c === 'clear')
      return post(() => {
        const body = parseBody(r.body, bodies.empty);
        return isError(body) ? body : api('admin', { op: 'clear', vserver: b, by });
      });
    if (c === 'backup')
      return post(() => {
        const body = parseBody(r.body, bodies.empty);
        if (isError(body)) return body;
        const made = api('admin', { op: 'backup-now', vserver: b, by });
        if (made.kind !== 'api' || known.backups.includes(b)) return made;
        return {
          ...made,
          refuse: err(
            409,
            `${b} has no backup configuration (cluster.yaml: vservers.${b}.backup; docs/backup.md)`,
            'vserver',
          ),
        };
      });
  }
  return err(404, `no such path: ${path}`, 'path');
}

function notAllowed(allow: string): HttpError {
  return { kind: 'error', status: 405, error: `method not allowed (use ${allow})`, field: 'method', allow };
}

function decodeURIComponentSafe(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

/** The part of a status answer a route asked for; undefined when the vserver vanished meanwhile. */
export function selectFrom<T extends { nodes: unknown[]; vservers: { name: string }[] }>(
  status: T,
  select: Select | undefined,
): unknown {
  if (!select) return status;
  if (select.what === 'nodes') return status.nodes;
  if (select.what === 'vservers') return status.vservers;
  return status.vservers.find((v) => v.name === select.name);
}
