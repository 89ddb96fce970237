import {
  type Attr,
  type DirEntry,
  encodeAttrOut,
  encodeDirents,
  encodeEntryOut,
  encodeError,
  encodeInitOut,
  encodeOpenOut,
  encodeReply,
  encodeStatfsOut,
  encodeWriteOut,
  type InHeader,
  type Request,
} from '../fuse/codec.ts';
import {
  DT_DIR,
  DT_REG,
  type ErrnoName,
  FUSE_KERNEL_VERSION,
  MAX_PAGES,
  MAX_WRITE,
  S_IFDIR,
  S_IFREG,
  WANTED_INIT_FLAGS,
} from '../fuse/protocol.ts';
import { type BlockDevice, DeviceError } from './block-device.ts';

const ROOT_INO = 1n;
const DEVICE_INO = 2n;
/** Attributes never change behind the kernel's back (the size is fixed), so let it cache them. */
const ATTR_VALID_SECONDS = 3600;

/**
 * The filesystem our FUSE server exposes: a root directory holding one regular file, the
 * volume's device, whose reads, writes and fsyncs go to a BlockDevice. It decides replies; the
 * session does the /dev/fuse I/O. Returns null for requests that take no reply.
 */
export class DeviceFilesystem {
  readonly fileName: string;
  private readonly device: BlockDevice;
  private readonly created = Date.now() / 1000;
  private nextFh = 1n;
  initialised = false;

  constructor(device: BlockDevice, fileName = 'device') {
    this.device = device;
    this.fileName = fileName;
  }

  async handle(header: InHeader, req: Request): Promise<Buffer | null> {
    const u = header.unique;
    const node = header.nodeid;
    switch (req.op) {
      case 'INIT':
        if (req.major !== FUSE_KERNEL_VERSION) return encodeError(u, 'EPROTO');
        this.initialised = true;
        return encodeReply(
          u,
          encodeInitOut({
            flags: req.flags & WANTED_INIT_FLAGS,
            maxReadahead: req.maxReadahead,
            maxWrite: MAX_WRITE,
            maxPages: MAX_PAGES,
            maxBackground: 64,
          }),
        );
      case 'LOOKUP':
        if (node !== ROOT_INO) return encodeError(u, 'ENOTDIR');
        if (req.name !== this.fileName) return encodeError(u, 'ENOENT');
        return encodeReply(u, encodeEntryOut(this.attr(DEVICE_INO), ATTR_VALID_SECONDS));
      case 'GETATTR':
      case 'SETATTR': {
        // SETATTR only reports: the device's size and mode are fixed, timestamps are not kept.
        const attr = this.attrOf(node);
        return attr ? encodeReply(u, encodeAttrOut(attr, ATTR_VALID_SECONDS)) : encodeError(u, 'ENOENT');
      }
      case 'OPEN':
        if (node !== DEVICE_INO) return encodeError(u, node === ROOT_INO ? 'EISDIR' : 'ENOENT');
        return encodeReply(u, encodeOpenOut(this.nextFh++));
      case 'OPENDIR':
        if (node !== ROOT_INO) return encodeError(u, 'ENOTDIR');
        return encodeReply(u, encodeOpenOut(this.nextFh++));
      case 'READDIR':
        if (node !== ROOT_INO) return encodeError(u, 'ENOTDIR');
        return encodeReply(u, encodeDirents(this.entries(), Number(req.offset), req.size));
      case 'READ':
        return this.io(u, node, async () => {
          const { offset, length } = this.clamp(req.offset, req.size);
          return length > 0 ? await this.device.read(offset, length) : Buffer.alloc(0);
        });
      case 'WRITE':
        return this.io(u, node, async () => {
          const end = req.offset + BigInt(req.data.length);
          if (end > BigInt(this.device.size))
            throw new DeviceError('ENOSPC', 'write past the end of the device');
          await this.device.write(Number(req.offset), req.data);
          return encodeWriteOut(req.data.length);
        });
      case 'FSYNC':
        return this.io(u, node, async () => {
          await this.device.flush();
          return Buffer.alloc(0);
        });
      case 'FLUSH':
      case 'RELEASE':
      case 'RELEASEDIR':
      case 'FSYNCDIR':
      case 'ACCESS':
      case 'DESTROY':
        return encodeReply(u);
      case 'STATFS': {
        const blocks = BigInt(Math.ceil(this.device.size / 4096));
        return encodeReply(
          u,
          encodeStatfsOut({ blocks, bfree: 0n, bavail: 0n, files: 2n, ffree: 0n, bsize: 4096, namelen: 255 }),
        );
      }
      case 'FORGET':
      case 'BATCH_FORGET':
      case 'INTERRUPT':
        // No reply. INTERRUPT: our requests finish quickly or not at all, so we let them complete.
        return null;
      case 'UNSUPPORTED':
        return encodeError(u, 'ENOSYS');
    }
  }

  /** Runs a data operation on the device file, mapping device failures to errno replies. */
  private async io(unique: bigint, node: bigint, op: () => Promise<Buffer>): Promise<Buffer> {
    if (node !== DEVICE_INO) return encodeError(unique, node === ROOT_INO ? 'EISDIR' : 'ENOENT');
    try {
      return encodeReply(unique, await op());
    } catch (err) {
      const errno: ErrnoName = err instanceof DeviceError ? err.errno : 'EIO';
      return encodeError(unique, errno);
    }
  }

  private clamp(offset: bigint, size: number): { offset: number; length: number } {
    const total = BigInt(this.device.size);
    if (offset >= total) return { offset: 0, length: 0 };
    const length = Number(offset + BigInt(size) > total ? total - offset : BigInt(size));
    return { offset: Number(offset), length };
  }

  private attrOf(node: bigint): Attr | undefined {
    return node === ROOT_INO || node === DEVICE_INO ? this.attr(node) : undefined;
  }

  private attr(ino: bigint): Attr {
    if (ino === ROOT_INO)
      return { ino, size: 4096n, mode: S_IFDIR | 0o755, nlink: 2, uid: 0, gid: 0, time: this.created };
    return {
      ino,
      size: BigInt(this.device.size),
      mode: S_IFREG | 0o600,
      nlink: 1,
      uid: 0,
      gid: 0,
      time: this.created,
    };
  }

  private entries(): DirEntry[] {
    return [
      { ino: ROOT_INO, name: '.', type: DT_DIR },
      { ino: ROOT_INO, name: '..', type: DT_DIR },
      { ino: DEVICE_INO, name: this.fileName, type: DT_REG },
    ];
  }
}
