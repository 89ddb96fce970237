/**
 * API tokens (docs/http.md): stored in etcd under `/cvserver/<cluster>/tokens/<name>`, so every agent
 * answers with the same tokens and a revocation holds cluster-wide (within TOKEN_CACHE_MS on the other
 * nodes); only the SHA-256 of a token is stored. A token is `cvs_` + 32 random bytes (base64url): its
 * entropy makes a plain hash enough (no salt or slow hash: nothing to guess from it).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { UserError } from '../../lib/errors.ts';
import type { EtcdClient } from '../etcd/client.ts';
import { clusterPrefix, RECORD_VERSION } from '../records.ts';

export const SCOPES = ['read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];
export const TOKEN_NAME = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
/** How long an agent trusts its last read of the tokens (a revocation elsewhere takes this long here). */
export const TOKEN_CACHE_MS = 2000;
/** How long the last read still serves while etcd does not answer. */
export const TOKEN_STALE_MS = 60_000;

export const tokenRecordSchema = z.object({
  version: z.literal(RECORD_VERSION),
  name: z.string(),
  scope: z.enum(SCOPES),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: z.number(),
  createdBy: z.string(),
});
export type TokenRecord = z.infer<typeof tokenRecordSchema>;
/** What `token list` shows: never the hash. */
export type TokenInfo = Omit<TokenRecord, 'version' | 'sha256'>;

export function newToken(): string {
  return `cvs_${randomBytes(32).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** The record whose hash matches the token (compared in constant time), or undefined. */
export function findToken(records: readonly TokenRecord[], token: string): TokenRecord | undefined {
  const h = Buffer.from(hashToken(token), 'hex');
  let found: TokenRecord | undefined;
  for (const r of records) if (timingSafeEqual(h, Buffer.from(r.sha256, 'hex'))) found = r;
  return found;
}

/** `admin` may do everything `read` may. */
export function allows(have: Scope, need: Scope): boolean {
  return have === 'admin' || need === 'read';
}

export class TokenStore {
  readonly #client: EtcdClient;
  readonly #prefix: string;
  #cache: { at: number; records: TokenRecord[] } | undefined;

  constructor(client: EtcdClient, cluster: string) {
    this.#client = client;
    this.#prefix = `${clusterPrefix(cluster)}tokens/`;
  }

  async records(timeoutMs = 5000): Promise<TokenRecord[]> {
    if (this.#cache && Date.now() - this.#cache.at < TOKEN_CACHE_MS) return this.#cache.records;
    let r: Awaited<ReturnType<EtcdClient['range']>>;
    try {
      r = await this.#client.range(this.#prefix, { prefix: true, timeoutMs });
    } catch (err) {
      // etcd slow or away: the last read serves a while (the dashboard of a troubled cluster matters
      // most); a revocation made meanwhile cannot be read here anyway.
      if (this.#cache && Date.now() - this.#cache.at < TOKEN_STALE_MS) return this.#cache.records;
      throw err;
    }
    const records: TokenRecord[] = [];
    for (const kv of r.kvs) {
      try {
        records.push(tokenRecordSchema.parse(JSON.parse(kv.value)));
      } catch {
        // A record this release cannot read authorizes nothing.
      }
    }
    this.#cache = { at: Date.now(), records };
    return records;
  }

  async verify(token: string): Promise<TokenRecord | undefined> {
    return findToken(await this.records(), token);
  }

  async list(): Promise<TokenInfo[]> {
    this.#cache = undefined;
    return (await this.records()).map(({ name, scope, createdAt, createdBy }) => ({
      name,
      scope,
      createdAt,
      createdBy,
    }));
  }

  /** A new token (shown once); refused when the name is taken (one transaction: no overwrite). */
  async create(
    name: string,
    scope: Scope,
    by: string,
  ): Promise<{ name: string; scope: Scope; token: string }> {
    if (!TOKEN_NAME.test(name))
      throw new UserError(
        `token name "${name}": expected lowercase letters, digits, '.', '_', '-' (at most 32, starting with a letter or digit)`,
      );
    const token = newToken();
    const record: TokenRecord = {
      version: RECORD_VERSION,
      name,
      scope,
      sha256: hashToken(token),
      createdAt: Date.now(),
      createdBy: by,
    };
    const key = this.#prefix + name;
    const r = await this.#client.txn(
      {
        compare: [{ key, target: 'createRevision', op: '=', value: 0 }],
        success: [{ op: 'put', key, value: JSON.stringify(record) }],
      },
      { timeoutMs: 2000 },
    );
    if (!r.succeeded) throw new UserError(`a token named "${name}" exists (revoke it first)`);
    this.#cache = undefined;
    return { name, scope, token };
  }

  async revoke(name: string): Promise<void> {
    const r = await this.#client.delete(this.#prefix + name, { timeoutMs: 2000 });
    this.#cache = undefined;
    if (r.deleted === 0) throw new UserError(`no token named "${name}"`);
  }
}

const stores = new WeakMap<EtcdClient, TokenStore>();
/** One store (and cache) per agent's etcd client: the socket's token commands and the HTTP server share it. */
export function tokensOf(client: EtcdClient, cluster: string): TokenStore {
  let s = stores.get(client);
  if (!s) {
    s = new TokenStore(client, cluster);
    stores.set(client, s);
  }
  return s;
}
