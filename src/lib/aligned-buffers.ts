/**
 * Buffers whose address suits direct I/O (O_DIRECT): the FUSE session reads requests into them and
 * the local device writes from them without a bounce copy.
 */

/**
 * Memory alignment that direct I/O (O_DIRECT) needs: the backing device's logical block size
 * (512 B on our disks); 4096 covers 4K-sector devices too.
 */
export const DIRECT_IO_ALIGNMENT = 4096;
const WASM_PAGE = 65536;
/** The one WebAssembly API we use (our TypeScript libs do not declare WebAssembly). */
const { Memory: WasmMemory } = (
  globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } };
  }
).WebAssembly;

/** Allocations made by allocAlignedBuffers; only these can be known to be aligned. */
const alignedMemory = new WeakSet<ArrayBufferLike>();

/**
 * `count` buffers of `size` bytes from one page-aligned allocation, each placed so that the byte
 * at index `lead` sits on a DIRECT_IO_ALIGNMENT boundary (a FUSE read buffer wants its WRITE
 * payload, not its header, aligned). A Buffer's address is not observable from JavaScript, but a
 * WebAssembly memory is a fresh page-aligned mapping, so offsets within it are addresses modulo
 * the page size. Untouched pages cost no RSS. If such a memory cannot be had, the buffers are
 * ordinary ones and isDirectIoAligned says no.
 */
export function allocAlignedBuffers(size: number, count = 1, lead = 0): Buffer[] {
  const pad = (DIRECT_IO_ALIGNMENT - (lead % DIRECT_IO_ALIGNMENT)) % DIRECT_IO_ALIGNMENT;
  const stride = Math.ceil((pad + size) / DIRECT_IO_ALIGNMENT) * DIRECT_IO_ALIGNMENT;
  let memory: Buffer;
  try {
    const pages = Math.ceil((stride * count) / WASM_PAGE);
    const { buffer } = new WasmMemory({ initial: pages, maximum: pages });
    alignedMemory.add(buffer);
    memory = Buffer.from(buffer);
  } catch {
    memory = Buffer.allocUnsafeSlow(stride * count);
  }
  return Array.from({ length: count }, (_, i) => memory.subarray(i * stride + pad, i * stride + pad + size));
}

/**
 * True when `buf` starts at an address that is a multiple of `alignment` (at most
 * DIRECT_IO_ALIGNMENT). Known only for memory from allocAlignedBuffers; false for any other.
 */
export function isDirectIoAligned(buf: Buffer, alignment = DIRECT_IO_ALIGNMENT): boolean {
  return (
    alignment <= DIRECT_IO_ALIGNMENT && alignedMemory.has(buf.buffer) && buf.byteOffset % alignment === 0
  );
}
