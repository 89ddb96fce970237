import { z } from 'zod';

/**
 * The JSON shapes of etcd 3.4's v3 gateway (grpc-gateway over the gRPC API), pure: encoding requests and
 * validating/decoding replies. Keys and values travel as base64 bytes; int64 fields as decimal strings, and
 * fields at their zero value (0, false, empty) are left out. Revisions fit a JS number (checked); lease IDs
 * are random 63-bit numbers and stay decimal strings.
 */

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  /** Decimal lease ID; '0' when the key has no lease. */
  lease: string;
}

export type CompareOp = '=' | '!=' | '<' | '>';

/** One txn condition. `createRevision = 0` means "the key does not exist". */
export type Compare =
  | { key: string; target: 'value'; op: CompareOp; value: string }
  | { key: string; target: 'createRevision'; op: CompareOp; value: number }
  | { key: string; target: 'modRevision'; op: CompareOp; value: number }
  | { key: string; target: 'version'; op: CompareOp; value: number }
  | { key: string; target: 'lease'; op: CompareOp; value: string };

export type TxnOp =
  | { op: 'put'; key: string; value: string; lease?: string }
  | { op: 'delete'; key: string; prefix?: boolean }
  /** `end`: the keys from `key` up to `end` (excluded), instead of one key or a prefix. */
  | { op: 'range'; key: string; prefix?: boolean; end?: string };

export type TxnOpResult =
  | { op: 'put' }
  | { op: 'delete'; deleted: number }
  | { op: 'range'; kvs: KeyValue[] };

export interface TxnRequest {
  compare: Compare[];
  success: TxnOp[];
  failure?: TxnOp[];
}

/** A reply that is not what the gateway should send; the client turns it into an EtcdError. */
export class MalformedReply extends Error {}

// ---- encoding ----

export function b64(s: string | Buffer): string {
  return (typeof s === 'string' ? Buffer.from(s, 'utf8') : s).toString('base64');
}

/** The range_end that selects every key starting with `prefix` (etcd's "prefix + 1"); "\0" = no upper bound. */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** The first key after every key under `prefix` (its last character, ASCII, plus one): a range's end. */
export function prefixEnd(prefix: string): string {
  const last = prefix.charCodeAt(prefix.length - 1);
  if (!(last >= 0 && last < 0x7f)) throw new Error(`prefixEnd: '${prefix}' must end in an ASCII character`);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}

/** `{key, range_end?}` for one key or, with prefix, every key under it (an empty prefix = all keys). */
export function keyRange(key: string, prefix = false): { key: string; range_end?: string } {
  const k = Buffer.from(key, 'utf8');
  if (!prefix) return { key: b64(k) };
  if (k.length === 0) return { key: b64(Buffer.from([0])), range_end: b64(Buffer.from([0])) };
  return { key: b64(k), range_end: b64(prefixRangeEnd(k)) };
}

const DECIMAL = /^(0|-?[1-9][0-9]*)$/;

export function checkLeaseId(id: string): string {
  if (!DECIMAL.test(id)) throw new Error(`lease ID must be a decimal integer string, got '${id}'`);
  return id;
}

export function checkMemberId(id: string): string {
  if (!DECIMAL.test(id)) throw new Error(`member ID must be a decimal integer string, got '${id}'`);
  return id;
}

const RESULTS: Record<CompareOp, string> = { '=': 'EQUAL', '!=': 'NOT_EQUAL', '<': 'LESS', '>': 'GREATER' };

export function encodeCompare(c: Compare): Record<string, unknown> {
  const base = { key: b64(c.key), result: RESULTS[c.op] };
  switch (c.target) {
    case 'value':
      return { ...base, target: 'VALUE', value: b64(c.value) };
    case 'createRevision':
      return { ...base, target: 'CREATE', create_revision: String(c.value) };
    case 'modRevision':
      return { ...base, target: 'MOD', mod_revision: String(c.value) };
    case 'version':
      return { ...base, target: 'VERSION', version: String(c.value) };
    case 'lease':
      return { ...base, target: 'LEASE', lease: checkLeaseId(c.value) };
  }
}

export function encodeOp(o: TxnOp): Record<string, unknown> {
  switch (o.op) {
    case 'put':
      return { request_put: encodePut(o.key, o.value, o.lease) };
    case 'delete':
      return { request_delete_range: keyRange(o.key, o.prefix) };
    case 'range':
      return {
        request_range:
          o.end === undefined ? keyRange(o.key, o.prefix) : { key: b64(o.key), range_end: b64(o.end) },
      };
  }
}

export function encodePut(key: string, value: string, lease?: string): Record<string, unknown> {
  const body: Record<string, unknown> = { key: b64(key), value: b64(value) };
  if (lease !== undefined && lease !== '0') body.lease = checkLeaseId(lease);
  return body;
}

export function encodeTxn(t: TxnRequest): Record<string, unknown> {
  return {
    compare: t.compare.map(encodeCompare),
    success: t.success.map(encodeOp),
    failure: (t.failure ?? []).map(encodeOp),
  };
}

// ---- decoding ----

const int64 = z.union([z.string().regex(DECIMAL), z.number().int()]).transform(String);
const bytes = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/);
const header = z.object({ revision: int64.optional(), member_id: int64.optional() }).loose();

const kvSchema = z
  .object({
    key: bytes,
    value: bytes.optional(),
    create_revision: int64.optional(),
    mod_revision: int64.optional(),
    version: int64.optional(),
    lease: int64.optional(),
  })
  .loose();

const rangeSchema = z
  .object({ header: header.optional(), kvs: z.array(kvSchema).optional(), count: int64.optional() })
  .loose();
const putSchema = z.object({ header: header.optional() }).loose();
const deleteSchema = z.object({ header: header.optional(), deleted: int64.optional() }).loose();
const txnSchema = z
  .object({
    header: header.optional(),
    succeeded: z.boolean().optional(),
    responses: z
      .array(
        z
          .object({
            response_range: rangeSchema.optional(),
            response_put: putSchema.optional(),
            response_delete_range: deleteSchema.optional(),
          })
          .loose(),
      )
      .optional(),
  })
  .loose();
const grantSchema = z
  .object({
    header: header.optional(),
    ID: int64.optional(),
    TTL: int64.optional(),
    error: z.string().optional(),
  })
  .loose();
const keepAliveSchema = z
  .object({
    result: z
      .object({ header: header.optional(), ID: int64.optional(), TTL: int64.optional() })
      .loose()
      .optional(),
    error: z.unknown().optional(),
  })
  .loose();
const memberSchema = z
  .object({
    ID: int64.optional(),
    name: z.string().optional(),
    peerURLs: z.array(z.string()).optional(),
    clientURLs: z.array(z.string()).optional(),
    isLearner: z.boolean().optional(),
  })
  .loose();
const memberListSchema = z
  .object({ header: header.optional(), members: z.array(memberSchema).optional() })
  .loose();
/** MemberAdd's reply: the new member and the list with it (MemberRemove and MemberPromote: the list). */
const memberAddSchema = z
  .object({
    header: header.optional(),
    member: memberSchema.optional(),
    members: z.array(memberSchema).optional(),
  })
  .loose();
const statusSchema = z
  .object({
    header: header.optional(),
    version: z.string().optional(),
    dbSize: int64.optional(),
    leader: int64.optional(),
    raftIndex: int64.optional(),
    raftTerm: int64.optional(),
    errors: z.array(z.string()).optional(),
    isLearner: z.boolean().optional(),
  })
  .loose();
/** The body of a non-2xx reply. */
const errorSchema = z
  .object({ error: z.string().optional(), message: z.string().optional(), code: z.number().int().optional() })
  .loose();

function parse<T>(schema: z.ZodType<T>, body: unknown, what: string): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new MalformedReply(
      `malformed ${what} reply: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`,
    );
  }
  return r.data;
}

function revisionNumber(s: string | undefined, field: string): number {
  const n = Number(s ?? '0');
  if (!Number.isSafeInteger(n))
    throw new MalformedReply(`malformed reply: ${field} ${s} is not a safe integer`);
  return n;
}

function utf8(b: string): string {
  return Buffer.from(b, 'base64').toString('utf8');
}

function decodeKv(kv: z.infer<typeof kvSchema>): KeyValue {
  return {
    key: utf8(kv.key),
    value: utf8(kv.value ?? ''),
    createRevision: revisionNumber(kv.create_revision, 'create_revision'),
    modRevision: revisionNumber(kv.mod_revision, 'mod_revision'),
    version: revisionNumber(kv.version, 'version'),
    lease: kv.lease ?? '0',
  };
}

export interface RangeResult {
  kvs: KeyValue[];
  count: number;
  revision: number;
}

export function decodeRange(body: unknown): RangeResult {
  const r = parse(rangeSchema, body, 'range');
  return {
    kvs: (r.kvs ?? []).map(decodeKv),
    count: revisionNumber(r.count, 'count'),
    revision: revisionNumber(r.header?.revision, 'revision'),
  };
}

export function decodePut(body: unknown): { revision: number } {
  return { revision: revisionNumber(parse(putSchema, body, 'put').header?.revision, 'revision') };
}

export function decodeDelete(body: unknown): { deleted: number; revision: number } {
  const r = parse(deleteSchema, body, 'deleterange');
  return {
    deleted: revisionNumber(r.deleted, 'deleted'),
    revision: revisionNumber(r.header?.revision, 'revision'),
  };
}

export interface TxnResult {
  succeeded: boolean;
  responses: TxnOpResult[];
  revision: number;
}

export function decodeTxn(body: unknown): TxnResult {
  const r = parse(txnSchema, body, 'txn');
  const responses = (r.responses ?? []).map((op): TxnOpResult => {
    if (op.response_range) return { op: 'range', kvs: (op.response_range.kvs ?? []).map(decodeKv) };
    if (op.response_delete_range)
      return { op: 'delete', deleted: revisionNumber(op.response_delete_range.deleted, 'deleted') };
    if (op.response_put) return { op: 'put' };
    throw new MalformedReply('malformed txn reply: a response of unknown kind');
  });
  return {
    succeeded: r.succeeded ?? false,
    responses,
    revision: revisionNumber(r.header?.revision, 'revision'),
  };
}

export function decodeGrant(body: unknown): { id: string; ttl: number } {
  const r = parse(grantSchema, body, 'lease grant');
  if (r.error) throw new MalformedReply(`lease grant refused: ${r.error}`);
  if (!r.ID || r.ID === '0') throw new MalformedReply('malformed lease grant reply: no lease ID');
  return { id: r.ID, ttl: revisionNumber(r.TTL, 'TTL') };
}

/**
 * The gateway streams keepalive replies as `{"result": ...}` lines (or `{"error": ...}`); we send one
 * request and read the first line. A lease the server does not know comes back without TTL: ttl 0.
 */
export function decodeKeepAlive(text: string): { ttl: number } | { error: string } {
  const line = text.split('\n').find((l) => l.trim() !== '');
  if (line === undefined) throw new MalformedReply('malformed lease keepalive reply: empty');
  const r = parse(keepAliveSchema, parseJson(line), 'lease keepalive');
  if (r.error !== undefined) return { error: describeStreamError(r.error) };
  if (!r.result) throw new MalformedReply('malformed lease keepalive reply: no result');
  return { ttl: revisionNumber(r.result.TTL, 'TTL') };
}

function describeStreamError(e: unknown): string {
  const parsed = errorSchema.safeParse(e);
  if (parsed.success) return parsed.data.message ?? parsed.data.error ?? JSON.stringify(e);
  return typeof e === 'string' ? e : JSON.stringify(e);
}

export interface Member {
  id: string;
  name: string;
  peerUrls: string[];
  clientUrls: string[];
  isLearner: boolean;
}

type RawMember = z.infer<typeof memberSchema>;
const toMember = (m: RawMember): Member => ({
  id: m.ID ?? '0',
  name: m.name ?? '',
  peerUrls: m.peerURLs ?? [],
  clientUrls: m.clientURLs ?? [],
  isLearner: m.isLearner ?? false,
});

export function decodeMemberList(body: unknown): Member[] {
  return (parse(memberListSchema, body, 'member list').members ?? []).map(toMember);
}

/** The member MemberAdd made (a member not started yet has no name) and the cluster's members with it. */
export function decodeMemberAdd(body: unknown): { member: Member; members: Member[] } {
  const r = parse(memberAddSchema, body, 'member add');
  if (!r.member) throw new MalformedReply('malformed member add reply: no member');
  return { member: toMember(r.member), members: (r.members ?? []).map(toMember) };
}

export interface MemberStatus {
  memberId: string;
  /** Member ID of the leader as this member sees it; '0' when it knows none. */
  leader: string;
  version: string;
  raftTerm: number;
  raftIndex: number;
  dbSize: number;
  revision: number;
  errors: string[];
  /** A learner (a member still catching up after joining) serves no linearizable request. */
  isLearner: boolean;
}

export function decodeStatus(body: unknown): MemberStatus {
  const r = parse(statusSchema, body, 'status');
  return {
    memberId: r.header?.member_id ?? '0',
    leader: r.leader ?? '0',
    version: r.version ?? '',
    raftTerm: revisionNumber(r.raftTerm, 'raftTerm'),
    raftIndex: revisionNumber(r.raftIndex, 'raftIndex'),
    dbSize: revisionNumber(r.dbSize, 'dbSize'),
    revision: revisionNumber(r.header?.revision, 'revision'),
    errors: r.errors ?? [],
    isLearner: r.isLearner ?? false,
  };
}

/** `{code, message}` of an error reply (gRPC status code: 5 not found, 14 unavailable, ...), when it has one. */
export function decodeErrorBody(text: string): { code: number | null; message: string } {
  try {
    const r = errorSchema.safeParse(JSON.parse(text));
    if (r.success && (r.data.message || r.data.error))
      return { code: r.data.code ?? null, message: (r.data.message ?? r.data.error)! };
  } catch {}
  return { code: null, message: text.trim().slice(0, 200) || '(empty body)' };
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new MalformedReply(`malformed reply: not JSON: ${text.trim().slice(0, 80) || '(empty)'}`);
  }
}
