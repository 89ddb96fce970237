import { Agent, request } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { errnoCode, errorMessage } from '../../lib/errors.ts';
import { KeepAliveStream, StreamFailure } from './keepalive-stream.ts';
import {
  checkLeaseId,
  checkMemberId,
  decodeDelete,
  decodeErrorBody,
  decodeGrant,
  decodeKeepAlive,
  decodeMemberAdd,
  decodeMemberList,
  decodePut,
  decodeRange,
  decodeStatus,
  decodeTxn,
  encodePut,
  encodeTxn,
  type KeyValue,
  keyRange,
  MalformedReply,
  type Member,
  type MemberStatus,
  parseJson,
  type RangeResult,
  type TxnRequest,
  type TxnResult,
} from './wire.ts';

export type {
  Compare,
  CompareOp,
  KeyValue,
  Member,
  MemberStatus,
  RangeResult,
  TxnOp,
  TxnOpResult,
  TxnRequest,
  TxnResult,
} from './wire.ts';

/**
 * A small etcd v3 client over the JSON gateway (HTTPS, client certificate), with a hard deadline on every
 * call: the agent fences itself on its own clock and must know within its renew timeout whether a
 * renewal was acknowledged. See docs/etcd.md for why not the npm etcd3 client.
 */

export interface EtcdClientOptions {
  /** `https://host:port`, tried in turn. */
  endpoints: string[];
  /** PEM strings. */
  ca: string;
  cert: string;
  key: string;
  /** Whole-call deadline (all endpoints tried within it). Default 1000 ms. */
  timeoutMs?: number;
  /** How long a new connection may take before the next endpoint is tried. Default timeoutMs / 3. */
  connectTimeoutMs?: number;
  /**
   * The first endpoint is home (the node's own member): while calls go elsewhere after a failure there,
   * it is asked for its status every HOME_PROBE_MS and calls (and watches) return to it once it has a
   * leader and is a voter. Default false: the endpoint that answered last is kept.
   */
  preferFirst?: boolean;
}

export interface CallOptions {
  timeoutMs?: number;
}

/**
 * unavailable: no endpoint could be reached or the member has no leader; timeout: no reply in time (a write
 * may or may not have been applied); rejected: etcd refused the request; malformed: a reply we cannot read.
 */
export type EtcdErrorKind = 'unavailable' | 'timeout' | 'rejected' | 'malformed';

export class EtcdError extends Error {
  readonly kind: EtcdErrorKind;
  /** gRPC status code of a rejected request (5 not found, 9 failed precondition, 14 unavailable, ...). */
  readonly code: number | null;
  readonly endpoint: string | null;
  constructor(
    kind: EtcdErrorKind,
    message: string,
    opts: { code?: number | null; endpoint?: string | null } = {},
  ) {
    super(message);
    this.name = 'EtcdError';
    this.kind = kind;
    this.code = opts.code ?? null;
    this.endpoint = opts.endpoint ?? null;
  }
}

const GRPC_NOT_FOUND = 5;
const GRPC_UNAVAILABLE = 14;
const MAX_REPLY_BYTES = 64 * 1024 * 1024;
/** Errors raised while connecting: the request was not sent, another endpoint may be tried for any call. */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND']);

interface Endpoint {
  url: string;
  hostname: string;
  port: number;
}

/** Why one attempt failed, and whether the next endpoint may be tried for this call. */
class AttemptFailure extends Error {
  readonly error: EtcdError;
  readonly notSent: boolean;
  constructor(error: EtcdError, notSent: boolean) {
    super(error.message);
    this.error = error;
    this.notSent = notSent;
  }
}

interface Reply {
  text: string;
  endpoint: string;
}

interface RawReply {
  status: number;
  text: string;
}

/** While away from home (`preferFirst`), how often home is asked whether it can serve again. */
export const HOME_PROBE_MS = 2000;

export class EtcdClient {
  readonly endpoints: readonly string[];
  private readonly parsed: Endpoint[];
  private readonly agent: Agent;
  /** Lease renewals (keepalive-stream.ts). */
  private readonly keepAliveStream: KeepAliveStream;
  private readonly timeoutMs: number;
  private readonly connectTimeoutMs: number;
  /** The endpoint that answered last: calls start there, and move on after it fails. */
  private current = 0;
  private readonly preferFirst: boolean;
  /** When home was last asked (ms, Date.now), and whether that probe is still out. */
  private homeProbedAt = 0;
  private homeProbing = false;
  /** Told when `current` changes: a watch moves to where the calls go (a watch alone sees no failure). */
  private readonly moved = new Set<() => void>();

  constructor(opts: EtcdClientOptions) {
    if (opts.endpoints.length === 0) throw new Error('EtcdClient: no endpoints');
    this.endpoints = [...opts.endpoints];
    this.parsed = opts.endpoints.map(parseEndpoint);
    this.timeoutMs = opts.timeoutMs ?? 1000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? Math.max(50, Math.floor(this.timeoutMs / 3));
    this.preferFirst = opts.preferFirst ?? false;
    this.agent = new Agent({ keepAlive: true, maxSockets: 16, ca: opts.ca, cert: opts.cert, key: opts.key });
    this.keepAliveStream = new KeepAliveStream({ ca: opts.ca, cert: opts.cert, key: opts.key });
  }

  /** The endpoint the next call starts with (the one that answered last, or the next after a failure). */
  get endpoint(): string {
    return this.parsed[this.current]!.url;
  }

  async range(
    key: string,
    opts: CallOptions & { prefix?: boolean; limit?: number; from?: string } = {},
  ): Promise<RangeResult> {
    const body: Record<string, unknown> = keyRange(key, opts.prefix);
    // With a prefix: only its keys from `from` on (they sort as bytes).
    if (opts.prefix && opts.from !== undefined) body.key = keyRange(opts.from).key;
    if (opts.limit !== undefined) body.limit = String(opts.limit);
    return decodeReply(await this.call('/v3/kv/range', body, true, opts), json(decodeRange));
  }

  /** The key's value, or null when it does not exist. */
  async get(key: string, opts: CallOptions = {}): Promise<string | null> {
    const r = await this.range(key, opts);
    return r.kvs[0]?.value ?? null;
  }

  async put(
    key: string,
    value: string,
    opts: CallOptions & { lease?: string } = {},
  ): Promise<{ revision: number }> {
    return decodeReply(
      await this.call('/v3/kv/put', encodePut(key, value, opts.lease), false, opts),
      json(decodePut),
    );
  }

  async delete(
    key: string,
    opts: CallOptions & { prefix?: boolean } = {},
  ): Promise<{ deleted: number; revision: number }> {
    return decodeReply(
      await this.call('/v3/kv/deleterange', keyRange(key, opts.prefix), false, opts),
      json(decodeDelete),
    );
  }

  /**
   * Key ranges (`end` excluded) in one read: a read-only txn, so one revision and linearizable like a
   * range; the keys in the order of the ranges.
   */
  async ranges(
    rs: { key: string; end: string }[],
    opts: CallOptions = {},
  ): Promise<{ kvs: KeyValue[]; revision: number }> {
    const t = encodeTxn({ compare: [], success: rs.map((r) => ({ op: 'range', key: r.key, end: r.end })) });
    const r = decodeReply(await this.call('/v3/kv/txn', t, true, opts), json(decodeTxn));
    return { kvs: r.responses.flatMap((x) => (x.op === 'range' ? x.kvs : [])), revision: r.revision };
  }

  async txn(t: TxnRequest, opts: CallOptions = {}): Promise<TxnResult> {
    return decodeReply(await this.call('/v3/kv/txn', encodeTxn(t), false, opts), json(decodeTxn));
  }

  /** A new lease; etcd raises TTLs below its minimum (2 s with our election timeout) to that minimum. */
  async leaseGrant(ttlSeconds: number, opts: CallOptions = {}): Promise<{ id: string; ttl: number }> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1)
      throw new Error(`lease TTL must be a whole number ≥ 1 s`);
    return decodeReply(
      await this.call('/v3/lease/grant', { TTL: String(ttlSeconds) }, false, opts),
      json(decodeGrant),
    );
  }

  /**
   * Renews the lease; `ttl <= 0` means the lease is gone (expired or revoked). On the gRPC stream
   * (keepalive-stream.ts) to the current endpoint; after a failure there, the JSON gateway call (every
   * endpoint in turn) within what is left of the deadline, and the next renewal opens a new stream
   * where that call was answered.
   */
  async leaseKeepAlive(id: string, opts: CallOptions = {}): Promise<{ ttl: number }> {
    checkLeaseId(id);
    const deadline = Date.now() + (opts.timeoutMs ?? this.timeoutMs);
    this.probeHome();
    const ep = this.parsed[this.current]!;
    try {
      return { ttl: await this.keepAliveStream.renew(ep.url, id, deadline - Date.now()) };
    } catch (err) {
      if (!(err instanceof StreamFailure)) throw err;
      this.moveTo((this.current + 1) % this.parsed.length);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new EtcdError(err.notSent ? 'unavailable' : err.kind, err.message, { endpoint: ep.url });
      }
      return this.leaseKeepAliveGateway(id, { timeoutMs: left });
    }
  }

  /** The renewal as one request to the JSON gateway. */
  async leaseKeepAliveGateway(id: string, opts: CallOptions = {}): Promise<{ ttl: number }> {
    const reply = await this.call('/v3/lease/keepalive', { ID: checkLeaseId(id) }, true, opts);
    const r = decodeReply(reply, decodeKeepAlive);
    if ('error' in r)
      throw new EtcdError('rejected', `etcd ${reply.endpoint} lease keepalive: ${r.error}`, {
        endpoint: reply.endpoint,
      });
    return r;
  }

  /** Revokes the lease (its keys are deleted); false when it was already gone. */
  async leaseRevoke(id: string, opts: CallOptions = {}): Promise<boolean> {
    try {
      await this.call('/v3/lease/revoke', { ID: checkLeaseId(id) }, true, opts);
      return true;
    } catch (err) {
      if (err instanceof EtcdError && err.code === GRPC_NOT_FOUND) return false;
      throw err;
    }
  }

  async memberList(opts: CallOptions = {}): Promise<Member[]> {
    return decodeReply(await this.call('/v3/cluster/member/list', {}, true, opts), json(decodeMemberList));
  }

  /**
   * Adds a member (etcd's MemberAdd) at these peer URLs; a learner does not vote (nor count for the
   * quorum) until promoted. Not retried on another endpoint once sent: it is not idempotent.
   */
  async memberAdd(
    peerUrls: string[],
    isLearner: boolean,
    opts: CallOptions = {},
  ): Promise<{ member: Member; members: Member[] }> {
    const body = { peerURLs: peerUrls, isLearner };
    return decodeReply(await this.call('/v3/cluster/member/add', body, false, opts), json(decodeMemberAdd));
  }

  /** Removes a member (etcd's MemberRemove); its etcd process stops when it learns of it. */
  async memberRemove(id: string, opts: CallOptions = {}): Promise<Member[]> {
    const body = { ID: checkMemberId(id) };
    return decodeReply(
      await this.call('/v3/cluster/member/remove', body, false, opts),
      json(decodeMemberList),
    );
  }

  /** Makes a learner a voting member; etcd refuses while the learner is not in sync with the leader. */
  async memberPromote(id: string, opts: CallOptions = {}): Promise<Member[]> {
    const body = { ID: checkMemberId(id) };
    return decodeReply(
      await this.call('/v3/cluster/member/promote', body, false, opts),
      json(decodeMemberList),
    );
  }

  /** The status of one member, asked of that member only (no failover). */
  async status(endpoint: string, opts: CallOptions = {}): Promise<MemberStatus> {
    const ep = parseEndpoint(endpoint);
    const deadline = Date.now() + (opts.timeoutMs ?? this.timeoutMs);
    try {
      const reply = await this.attempt(ep, '/v3/maintenance/status', '{}', deadline, deadline);
      const text = this.checkReply(ep, '/v3/maintenance/status', reply);
      return decodeReply({ text, endpoint: ep.url }, json(decodeStatus));
    } catch (err) {
      throw err instanceof AttemptFailure ? err.error : err;
    }
  }

  /**
   * Asks the leader (at `leaderEndpoint`) to hand its leadership to the member `targetId`
   * (`etcdctl move-leader`). Only the leader can do it.
   */
  async moveLeader(leaderEndpoint: string, targetId: string, opts: CallOptions = {}): Promise<void> {
    const ep = parseEndpoint(leaderEndpoint);
    const deadline = Date.now() + (opts.timeoutMs ?? this.timeoutMs);
    const path = '/v3/maintenance/transfer-leadership';
    try {
      const reply = await this.attempt(ep, path, JSON.stringify({ targetID: targetId }), deadline, deadline);
      this.checkReply(ep, path, reply);
    } catch (err) {
      throw err instanceof AttemptFailure ? err.error : err;
    }
  }

  /**
   * Watches the keys under `prefix` (a streaming `/v3/watch`) and calls `onChange` with the keys of each
   * batch of changes, until `close()`. After an error or the end of the stream it opens a new one (on
   * the next endpoint) after `retryMs`. Only a wake-up signal: the caller reads what changed itself.
   * The stream follows the calls: when they move to another endpoint (one failed, or home is back), it
   * reopens there, since a member that died without a word (a power cut) leaves it silent, not ended;
   * and it asks for a member with a leader (etcd's `hasleader`), so an isolated member ends it. Every
   * new stream after the first reports `[prefix]`: what changed in between was not seen.
   */
  watch(prefix: string, onChange: (keys: string[]) => void, retryMs = 500): { close(): void } {
    let closed = false;
    let at = this.current;
    let opened = 0;
    let req: ReturnType<typeof request> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let answerTimer: NodeJS.Timeout | undefined;
    /** Ends the current stream (its answer timer with it). */
    const drop = () => {
      clearTimeout(answerTimer);
      req?.destroy();
      req = undefined;
    };
    const retry = () => {
      if (closed || timer) return;
      drop();
      // Where the calls go, unless that is where it just failed.
      at = at === this.current ? (at + 1) % this.parsed.length : this.current;
      timer = setTimeout(() => {
        timer = undefined;
        open();
      }, retryMs);
    };
    const follow = () => {
      if (closed || at === this.current) return;
      clearTimeout(timer);
      timer = undefined;
      drop();
      at = this.current;
      open();
    };
    const open = () => {
      if (closed) return;
      const ep = this.parsed[at]!;
      const body = JSON.stringify({ create_request: keyRange(prefix, true) });
      const splitter = new JsonStreamSplitter();
      const mine = request(
        {
          hostname: ep.hostname,
          port: ep.port,
          path: '/v3/watch',
          method: 'POST',
          agent: this.agent,
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
            // gRPC metadata through the gateway: the member cancels the stream when it loses its leader.
            'grpc-metadata-hasleader': 'true',
          },
        },
        (res) => {
          if (req !== mine) return res.resume();
          clearTimeout(answerTimer);
          if (res.statusCode !== 200) {
            res.resume();
            return retry();
          }
          if (opened++ > 0) onChange([prefix]);
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            if (req !== mine) return;
            for (const text of splitter.push(chunk)) {
              const keys = watchedKeys(text);
              if (keys.length) onChange(keys);
            }
          });
          res.on('end', () => req === mine && retry());
          res.on('error', () => req === mine && retry());
        },
      );
      req = mine;
      mine.on('error', () => req === mine && retry());
      mine.end(body);
      // A member on a host that is gone never answers nor fails: give up on it like a call would.
      answerTimer = setTimeout(() => req === mine && retry(), this.timeoutMs);
    };
    this.moved.add(follow);
    open();
    return {
      close: () => {
        closed = true;
        this.moved.delete(follow);
        clearTimeout(timer);
        clearTimeout(answerTimer);
        req?.destroy();
      },
    };
  }

  private moveTo(index: number): void {
    if (index === this.current) return;
    this.current = index;
    for (const tell of this.moved) tell();
  }

  /**
   * Away from home (`preferFirst`): at most every HOME_PROBE_MS, in the background, home is asked for its
   * status; calls go back to it once it answers with a leader as a voter. Without this, a node whose
   * own member was still starting when its agent started stayed on another node's member: a power cut
   * there then held the node's watch silent and its calls until their deadlines (a failover's pickup).
   */
  private probeHome(): void {
    if (!this.preferFirst || this.current === 0 || this.homeProbing) return;
    const now = Date.now();
    if (now - this.homeProbedAt < HOME_PROBE_MS) return;
    this.homeProbing = true;
    this.homeProbedAt = now;
    this.status(this.parsed[0]!.url, { timeoutMs: this.connectTimeoutMs })
      .then((s) => {
        if (s.leader !== '0' && !s.isLearner) this.moveTo(0);
      })
      .catch(() => undefined) // still away: asked again later
      .finally(() => {
        this.homeProbing = false;
      });
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.agent.destroy();
    this.keepAliveStream.close();
  }

  /**
   * One call: starts at the current endpoint; on a failure that left the request unsent (or for an
   * idempotent request, any transport failure) tries the next, all within one deadline.
   */
  private async call(path: string, body: unknown, idempotent: boolean, opts: CallOptions): Promise<Reply> {
    const payload = JSON.stringify(body);
    const deadline = Date.now() + (opts.timeoutMs ?? this.timeoutMs);
    let last: EtcdError | null = null;
    this.probeHome();
    // Fixed before the loop: a failure moves `current` on, and counting from it again skipped an endpoint.
    const first = this.current;
    for (let tried = 0; tried < this.parsed.length; tried++) {
      const index = (first + tried) % this.parsed.length;
      const ep = this.parsed[index]!;
      const isLast = tried === this.parsed.length - 1;
      const connectBy = isLast ? deadline : Math.min(deadline, Date.now() + this.connectTimeoutMs);
      try {
        const reply = await this.attempt(ep, path, payload, deadline, connectBy);
        const text = this.checkReply(ep, path, reply);
        this.moveTo(index);
        return { text, endpoint: ep.url };
      } catch (err) {
        if (!(err instanceof AttemptFailure)) throw err;
        last = err.error;
        // This endpoint failed: the next call starts at the next one even if this one gives up now.
        this.moveTo((index + 1) % this.parsed.length);
        if (!(err.notSent || idempotent) || Date.now() >= deadline) break;
      }
    }
    throw last ?? new EtcdError('unavailable', `etcd ${path}: no endpoint`);
  }

  /** Turns an HTTP reply into its body text or an AttemptFailure / EtcdError. */
  private checkReply(ep: Endpoint, path: string, reply: RawReply): string {
    if (reply.status >= 200 && reply.status < 300) return reply.text;
    const { code, message } = decodeErrorBody(reply.text);
    const what = `etcd ${ep.url} ${path}: ${message}`;
    if (code === GRPC_UNAVAILABLE || reply.status === 503) {
      // e.g. "etcdserver: no leader": nothing was applied, another member may do better.
      throw new AttemptFailure(new EtcdError('unavailable', what, { code, endpoint: ep.url }), true);
    }
    throw new EtcdError('rejected', what, { code, endpoint: ep.url });
  }

  private attempt(
    ep: Endpoint,
    path: string,
    payload: string,
    deadline: number,
    connectBy: number,
  ): Promise<RawReply> {
    return new Promise((resolve, reject) => {
      let connected = false;
      let settled = false;
      const fail = (kind: EtcdErrorKind, msg: string, notSent: boolean): void => {
        if (settled) return;
        settled = true;
        clearTimeout(connectTimer);
        clearTimeout(replyTimer);
        req.destroy();
        reject(
          new AttemptFailure(
            new EtcdError(kind, `etcd ${ep.url} ${path}: ${msg}`, { endpoint: ep.url }),
            notSent,
          ),
        );
      };
      const req = request({
        agent: this.agent,
        hostname: ep.hostname,
        port: ep.port,
        path,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      });
      const now = Date.now();
      // Armed only for a new connection: a kept-alive one (every renewal) has nothing to wait for, and
      // a cleared timer still wakes the process at its time (Node re-arms its one timer lazily).
      let connectTimer: NodeJS.Timeout | undefined;
      const replyTimer = setTimeout(
        () => fail(connected ? 'timeout' : 'unavailable', `no reply within ${deadline - now} ms`, !connected),
        Math.max(0, deadline - now),
      );
      req.on('socket', (socket) => {
        const tls = socket as TLSSocket;
        if (req.reusedSocket || (!tls.connecting && tls.authorized !== undefined && tls.encrypted)) {
          connected = true;
          return;
        }
        tls.once('secureConnect', () => (connected = true));
        if (settled) return;
        connectTimer = setTimeout(
          () => {
            if (!connected) fail('unavailable', `no connection within ${connectBy - now} ms`, true);
          },
          Math.max(0, connectBy - Date.now()),
        );
      });
      req.on('error', (err) => {
        const code = errnoCode(err);
        // A kept-alive socket the server had closed fails on first write: nothing reached etcd.
        const notSent =
          !connected || (req.reusedSocket && code === 'ECONNRESET') || CONNECT_ERRORS.has(code ?? '');
        const kind = notSent ? 'unavailable' : 'timeout';
        fail(
          kind,
          notSent ? `cannot connect: ${errorMessage(err)}` : `connection lost: ${errorMessage(err)}`,
          notSent,
        );
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_REPLY_BYTES) fail('timeout', `reply larger than ${MAX_REPLY_BYTES} bytes`, false);
          else chunks.push(c);
        });
        res.on('error', (err) => fail('timeout', `reply cut: ${errorMessage(err)}`, false));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(connectTimer);
          clearTimeout(replyTimer);
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
      });
      req.end(payload);
    });
  }
}

function parseEndpoint(url: string): Endpoint {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`etcd endpoint '${url}' is not a URL`);
  }
  if (u.protocol !== 'https:') throw new Error(`etcd endpoint '${url}' must be https://`);
  const hostname = u.hostname.replace(/^\[|\]$/g, '');
  return { url: `https://${u.host}`, hostname, port: Number(u.port || 2379) };
}

/** Decodes a reply's text; a reply we cannot read is an EtcdError, never a crash. */
function decodeReply<T>(reply: Reply, decode: (text: string) => T): T {
  try {
    return decode(reply.text);
  } catch (err) {
    if (err instanceof MalformedReply)
      throw new EtcdError('malformed', `etcd ${reply.endpoint}: ${err.message}`, {
        endpoint: reply.endpoint,
      });
    throw err;
  }
}

const json =
  <T>(decode: (body: unknown) => T) =>
  (text: string): T =>
    decode(parseJson(text));

/**
 * Splits a stream of concatenated JSON objects (how the gateway streams watch responses) into their
 * texts. Keys and values are base64, but strings are honoured anyway.
 */
export class JsonStreamSplitter {
  #buf = '';
  #depth = 0;
  #inString = false;
  #escaped = false;
  #start = -1;

  push(chunk: string): string[] {
    const out: string[] = [];
    const base = this.#buf.length;
    this.#buf += chunk;
    for (let i = base; i < this.#buf.length; i++) {
      const c = this.#buf[i];
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === '\\') this.#escaped = true;
        else if (c === '"') this.#inString = false;
      } else if (c === '"') this.#inString = true;
      else if (c === '{') {
        if (this.#depth++ === 0) this.#start = i;
      } else if (c === '}' && this.#depth > 0 && --this.#depth === 0) {
        out.push(this.#buf.slice(this.#start, i + 1));
        this.#start = -1;
      }
    }
    // Keep only an object in progress.
    if (this.#depth === 0) this.#buf = '';
    else if (this.#start > 0) {
      this.#buf = this.#buf.slice(this.#start);
      this.#start = 0;
    }
    return out;
  }
}

/** The keys changed in one watch response (none for the "created" reply or anything unreadable). */
export function watchedKeys(text: string): string[] {
  try {
    const m = JSON.parse(text) as { result?: { events?: { kv?: { key?: string } }[] } };
    return (m.result?.events ?? []).map((e) => Buffer.from(e.kv?.key ?? '', 'base64').toString('utf8'));
  } catch {
    return [];
  }
}
