import { IN_HEADER_SIZE } from '../../src/fuse/protocol.ts';

/** A raw FUSE request as the kernel writes it to /dev/fuse: header, then the opcode's body. */
export function request(opcode: number, body: Buffer, nodeid = 1n, unique = 7n): Buffer {
  const h = Buffer.alloc(IN_HEADER_SIZE);
  h.writeUInt32LE(IN_HEADER_SIZE + body.length, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(unique, 8);
  h.writeBigUInt64LE(nodeid, 16);
  return Buffer.concat([h, body]);
}

/** The body of a WRITE request (fuse_write_in, then the data). */
export function writeBody(offset: bigint, data: Buffer): Buffer {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(offset, 8);
  b.writeUInt32LE(data.length, 16);
  return Buffer.concat([b, data]);
}
