/**
 * What the FUSE server serves as the volume's device file. The local volume implements it over a
 * data file; the replicated primary wraps the local one and the peers (protocol C), so the FUSE
 * layer never knows whether replication is on.
 *
 * Contract (the durability promise the filesystem above relies on):
 * - `write` resolves only when the data is written locally and by every connected up-to-date peer;
 *   it may wait (suspended I/O on quorum loss) or reject (EIO policy, fenced by a newer epoch).
 * - `flush` (FSYNC) resolves only when every acknowledged write is on stable storage locally
 *   (fdatasync) and on the peers.
 * - Many calls may be in flight at once; implementations must not serialise them needlessly.
 */
export interface BlockDevice {
  /** Size in bytes (a multiple of 4096). */
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  /** A write already on stable storage when it resolves (no flush needed), where the device has one. */
  writeDurable?(offset: number, data: Buffer): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** An I/O failure the FUSE layer reports to the kernel with this errno (e.g. EIO, EROFS). */
export class DeviceError extends Error {
  readonly errno: 'EIO' | 'EROFS' | 'ENOSPC' | 'EINVAL';
  constructor(errno: DeviceError['errno'], message: string) {
    super(message);
    this.name = 'DeviceError';
    this.errno = errno;
  }
}
