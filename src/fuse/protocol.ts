/**
 * Constants and struct sizes of the Linux FUSE kernel protocol (include/uapi/linux/fuse.h) that
 * this server speaks. We negotiate 7.31: new enough for MAX_PAGES and 64-byte INIT replies, old
 * enough that the request structs below have their classic sizes.
 */
export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 31;

export const Opcode = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  GETXATTR: 22,
  LISTXATTR: 23,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
} as const;
export type OpcodeName = keyof typeof Opcode;

export const OPCODE_NAMES: ReadonlyMap<number, OpcodeName> = new Map(
  Object.entries(Opcode).map(([name, code]) => [code, name as OpcodeName]),
);

/** INIT flags (fuse_init_in/out.flags). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
} as const;

/** What we ask for: DESIGN.md §3 (no WRITEBACK_CACHE: SETATTR storms and dirty pages held by us). */
export const WANTED_INIT_FLAGS =
  InitFlag.ASYNC_READ |
  InitFlag.BIG_WRITES |
  InitFlag.ASYNC_DIO |
  InitFlag.PARALLEL_DIROPS |
  InitFlag.MAX_PAGES;

export const IN_HEADER_SIZE = 40;
/** fuse_write_in: the WRITE payload starts this far into the request body. */
export const WRITE_IN_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
export const OPEN_OUT_SIZE = 16;
export const WRITE_OUT_SIZE = 8;
export const STATFS_OUT_SIZE = 80;
export const INIT_OUT_SIZE = 64;

/** Body sizes of the requests we parse; a shorter body is a malformed request. */
export const MIN_BODY = {
  INIT: 16,
  GETATTR: 16,
  SETATTR: 88,
  OPEN: 8,
  READ: 40,
  WRITE: 40,
  RELEASE: 24,
  FLUSH: 24,
  FSYNC: 16,
  FORGET: 8,
  BATCH_FORGET: 8,
  INTERRUPT: 8,
  ACCESS: 8,
} as const;

export const MAX_WRITE = 1024 * 1024;
export const MAX_PAGES = 256;
/** Read buffer: the largest request is a WRITE of MAX_WRITE plus its headers. */
export const READ_BUFFER_SIZE = MAX_WRITE + 64 * 1024;

/** errno values the server replies with (negated in the out header). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EACCES: 13,
  EEXIST: 17,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENOSYS: 38,
  ENODATA: 61,
  EPROTO: 71,
} as const;
export type ErrnoName = keyof typeof Errno;

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const DT_DIR = 4;
export const DT_REG = 8;
