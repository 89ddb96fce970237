import {
  ATTR_OUT_SIZE,
  ATTR_SIZE,
  ENTRY_OUT_SIZE,
  Errno,
  type ErrnoName,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  IN_HEADER_SIZE,
  INIT_OUT_SIZE,
  MIN_BODY,
  OPCODE_NAMES,
  OPEN_OUT_SIZE,
  type OpcodeName,
  OUT_HEADER_SIZE,
  STATFS_OUT_SIZE,
  WRITE_IN_SIZE,
  WRITE_OUT_SIZE,
} from './protocol.ts';

/**
 * Pure encoding and decoding of FUSE messages. Decoding never throws: a buffer that is not a
 * well-formed request yields a `malformed` result the session answers with EIO (or drops, when
 * not even the header is readable).
 */

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

export type Request =
  | { op: 'INIT'; major: number; minor: number; maxReadahead: number; flags: number }
  | { op: 'LOOKUP'; name: string }
  | { op: 'GETATTR'; fh: bigint }
  | { op: 'SETATTR'; valid: number; size: bigint }
  | { op: 'OPEN'; flags: number }
  | { op: 'OPENDIR'; flags: number }
  | { op: 'READ'; fh: bigint; offset: bigint; size: number }
  | { op: 'READDIR'; fh: bigint; offset: bigint; size: number }
  | { op: 'WRITE'; fh: bigint; offset: bigint; data: Buffer }
  | { op: 'FLUSH'; fh: bigint }
  | { op: 'FSYNC'; fh: bigint; datasync: boolean }
  | { op: 'FSYNCDIR'; fh: bigint }
  | { op: 'RELEASE'; fh: bigint }
  | { op: 'RELEASEDIR'; fh: bigint }
  | { op: 'STATFS' }
  | { op: 'ACCESS'; mask: number }
  | { op: 'FORGET'; nlookup: bigint }
  | { op: 'BATCH_FORGET'; count: number }
  | { op: 'INTERRUPT'; target: bigint }
  | { op: 'DESTROY' }
  | { op: 'UNSUPPORTED'; opcode: number; name: OpcodeName | undefined };

export type Decoded =
  | { ok: true; header: InHeader; request: Request }
  | { ok: false; header: InHeader | undefined; reason: string };

export function decodeHeader(buf: Buffer): InHeader | undefined {
  if (buf.length < IN_HEADER_SIZE) return undefined;
  return {
    len: buf.readUInt32LE(0),
    opcode: buf.readUInt32LE(4),
    unique: buf.readBigUInt64LE(8),
    nodeid: buf.readBigUInt64LE(16),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
  };
}

/** Decodes one request; `buf` holds exactly the bytes one read of /dev/fuse returned. */
export function decodeRequest(buf: Buffer): Decoded {
  const header = decodeHeader(buf);
  if (!header)
    return { ok: false, header, reason: `short read: ${buf.length} bytes, header needs ${IN_HEADER_SIZE}` };
  if (header.len !== buf.length) {
    return {
      ok: false,
      header,
      reason: `length field ${header.len} does not match ${buf.length} bytes read`,
    };
  }
  const body = buf.subarray(IN_HEADER_SIZE);
  const name = OPCODE_NAMES.get(header.opcode);
  const need = name && name in MIN_BODY ? MIN_BODY[name as keyof typeof MIN_BODY] : 0;
  if (body.length < need)
    return { ok: false, header, reason: `${name} body is ${body.length} bytes, needs ${need}` };
  const request = decodeBody(name, header.opcode, body);
  if (typeof request === 'string') return { ok: false, header, reason: request };
  return { ok: true, header, request };
}

function decodeBody(name: OpcodeName | undefined, opcode: number, body: Buffer): Request | string {
  switch (name) {
    case 'INIT':
      return {
        op: 'INIT',
        major: body.readUInt32LE(0),
        minor: body.readUInt32LE(4),
        maxReadahead: body.readUInt32LE(8),
        flags: body.readUInt32LE(12),
      };
    case 'LOOKUP': {
      const end = body.indexOf(0);
      if (end < 0) return 'LOOKUP name is not NUL-terminated';
      return { op: 'LOOKUP', name: body.toString('utf8', 0, end) };
    }
    case 'GETATTR':
      return { op: 'GETATTR', fh: body.readBigUInt64LE(8) };
    case 'SETATTR':
      return { op: 'SETATTR', valid: body.readUInt32LE(0), size: body.readBigUInt64LE(16) };
    case 'OPEN':
    case 'OPENDIR':
      return { op: name, flags: body.readUInt32LE(0) };
    case 'READ':
    case 'READDIR':
      return {
        op: name,
        fh: body.readBigUInt64LE(0),
        offset: body.readBigUInt64LE(8),
        size: body.readUInt32LE(16),
      };
    case 'WRITE': {
      const size = body.readUInt32LE(16);
      if (body.length - WRITE_IN_SIZE !== size)
        return `WRITE of ${size} bytes carries ${body.length - WRITE_IN_SIZE}`;
      return {
        op: 'WRITE',
        fh: body.readBigUInt64LE(0),
        offset: body.readBigUInt64LE(8),
        data: body.subarray(WRITE_IN_SIZE),
      };
    }
    case 'FLUSH':
    case 'RELEASE':
    case 'RELEASEDIR':
      return { op: name, fh: body.length >= 8 ? body.readBigUInt64LE(0) : 0n };
    case 'FSYNC':
      return { op: 'FSYNC', fh: body.readBigUInt64LE(0), datasync: (body.readUInt32LE(8) & 1) === 1 };
    case 'FSYNCDIR':
      return { op: 'FSYNCDIR', fh: body.length >= 8 ? body.readBigUInt64LE(0) : 0n };
    case 'STATFS':
      return { op: 'STATFS' };
    case 'ACCESS':
      return { op: 'ACCESS', mask: body.readUInt32LE(0) };
    case 'FORGET':
      return { op: 'FORGET', nlookup: body.readBigUInt64LE(0) };
    case 'BATCH_FORGET':
      return { op: 'BATCH_FORGET', count: body.readUInt32LE(0) };
    case 'INTERRUPT':
      return { op: 'INTERRUPT', target: body.readBigUInt64LE(0) };
    case 'DESTROY':
      return { op: 'DESTROY' };
    default:
      return { op: 'UNSUPPORTED', opcode, name };
  }
}

/** Requests the kernel expects no reply to. */
export function expectsReply(request: Request): boolean {
  return request.op !== 'FORGET' && request.op !== 'BATCH_FORGET' && request.op !== 'INTERRUPT';
}

export function encodeOutHeader(out: Buffer, len: number, errno: number, unique: bigint): void {
  out.writeUInt32LE(len, 0);
  out.writeInt32LE(errno, 4);
  out.writeBigUInt64LE(unique, 8);
}

export function encodeError(unique: bigint, errno: ErrnoName): Buffer {
  const out = Buffer.alloc(OUT_HEADER_SIZE);
  encodeOutHeader(out, OUT_HEADER_SIZE, -Errno[errno], unique);
  return out;
}

/** A success reply: header + body (body may be empty, e.g. FLUSH). */
export function encodeReply(unique: bigint, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(OUT_HEADER_SIZE + body.length);
  encodeOutHeader(out, out.length, 0, unique);
  body.copy(out, OUT_HEADER_SIZE);
  return out;
}

export interface Attr {
  ino: bigint;
  size: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch, for atime/mtime/ctime alike. */
  time: number;
}

function writeAttr(out: Buffer, at: number, a: Attr): void {
  out.fill(0, at, at + ATTR_SIZE);
  out.writeBigUInt64LE(a.ino, at);
  out.writeBigUInt64LE(a.size, at + 8);
  out.writeBigUInt64LE((a.size + 511n) / 512n, at + 16);
  const t = BigInt(Math.floor(a.time));
  out.writeBigUInt64LE(t, at + 24);
  out.writeBigUInt64LE(t, at + 32);
  out.writeBigUInt64LE(t, at + 40);
  out.writeUInt32LE(a.mode, at + 60);
  out.writeUInt32LE(a.nlink, at + 64);
  out.writeUInt32LE(a.uid, at + 68);
  out.writeUInt32LE(a.gid, at + 72);
  out.writeUInt32LE(4096, at + 80); // blksize
}

export function encodeEntryOut(attr: Attr, validSeconds: number): Buffer {
  const out = Buffer.alloc(ENTRY_OUT_SIZE);
  out.writeBigUInt64LE(attr.ino, 0); // nodeid
  out.writeBigUInt64LE(1n, 8); // generation
  out.writeBigUInt64LE(BigInt(validSeconds), 16); // entry_valid
  out.writeBigUInt64LE(BigInt(validSeconds), 24); // attr_valid
  writeAttr(out, 40, attr);
  return out;
}

export function encodeAttrOut(attr: Attr, validSeconds: number): Buffer {
  const out = Buffer.alloc(ATTR_OUT_SIZE);
  out.writeBigUInt64LE(BigInt(validSeconds), 0);
  writeAttr(out, 16, attr);
  return out;
}

export function encodeOpenOut(fh: bigint, openFlags = 0): Buffer {
  const out = Buffer.alloc(OPEN_OUT_SIZE);
  out.writeBigUInt64LE(fh, 0);
  out.writeUInt32LE(openFlags, 8);
  return out;
}

export function encodeWriteOut(size: number): Buffer {
  const out = Buffer.alloc(WRITE_OUT_SIZE);
  out.writeUInt32LE(size, 0);
  return out;
}

export interface StatFs {
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  bsize: number;
  namelen: number;
}

export function encodeStatfsOut(s: StatFs): Buffer {
  const out = Buffer.alloc(STATFS_OUT_SIZE);
  out.writeBigUInt64LE(s.blocks, 0);
  out.writeBigUInt64LE(s.bfree, 8);
  out.writeBigUInt64LE(s.bavail, 16);
  out.writeBigUInt64LE(s.files, 24);
  out.writeBigUInt64LE(s.ffree, 32);
  out.writeUInt32LE(s.bsize, 40);
  out.writeUInt32LE(s.namelen, 44);
  out.writeUInt32LE(s.bsize, 48); // frsize
  return out;
}

export interface InitReply {
  flags: number;
  maxReadahead: number;
  maxWrite: number;
  maxPages: number;
  maxBackground: number;
}

/**
 * The INIT reply. The kernel uses the lower of both minors, and refuses the connection when the
 * major differs, so for a kernel speaking another major we answer with ours alone (it then fails cleanly).
 */
export function encodeInitOut(r: InitReply): Buffer {
  const out = Buffer.alloc(INIT_OUT_SIZE);
  out.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  out.writeUInt32LE(FUSE_KERNEL_MINOR_VERSION, 4);
  out.writeUInt32LE(r.maxReadahead, 8);
  out.writeUInt32LE(r.flags, 12);
  out.writeUInt16LE(r.maxBackground, 16);
  out.writeUInt16LE(Math.floor((r.maxBackground * 3) / 4), 18); // congestion_threshold
  out.writeUInt32LE(r.maxWrite, 20);
  out.writeUInt32LE(1, 24); // time_gran: 1 ns
  out.writeUInt16LE(r.maxPages, 28);
  return out;
}

export interface DirEntry {
  ino: bigint;
  name: string;
  type: number;
}

/**
 * READDIR reply: entries from index `offset` on, as many as fit in `size` bytes. Each dirent's
 * `off` is the index of the next entry, which is what the kernel hands back as the next offset.
 */
export function encodeDirents(entries: readonly DirEntry[], offset: number, size: number): Buffer {
  const parts: Buffer[] = [];
  let used = 0;
  for (let i = offset; i < entries.length; i++) {
    const e = entries[i]!;
    const name = Buffer.from(e.name, 'utf8');
    const len = 24 + name.length;
    const padded = (len + 7) & ~7;
    if (used + padded > size) break;
    const d = Buffer.alloc(padded);
    d.writeBigUInt64LE(e.ino, 0);
    d.writeBigUInt64LE(BigInt(i + 1), 8);
    d.writeUInt32LE(name.length, 16);
    d.writeUInt32LE(e.type, 20);
    name.copy(d, 24);
    parts.push(d);
    used += padded;
  }
  return Buffer.concat(parts);
}
