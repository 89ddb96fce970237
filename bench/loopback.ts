/**
 * bench/loopback: the floor under replication on this machine. Two Node processes, one TCP
 * connection on loopback (no nodelay delays), echoing 64 B, 4 KiB and 1 MiB messages: the round
 * trip a protocol-C write cannot beat, whatever the replication code does.
 *   scripts/node bench/loopback.ts
 */
import { fork } from 'node:child_process';
import { connect, createServer } from 'node:net';

if (process.argv[2] === 'echo') {
  const server = createServer((s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
  });
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    process.send?.(typeof addr === 'object' && addr ? addr.port : 0);
  });
} else {
  const child = fork(import.meta.filename, ['echo']);
  const port = await new Promise<number>((resolve) => child.once('message', (m) => resolve(Number(m))));
  try {
    for (const size of [64, 4096, 1 << 20]) {
      const sock = connect(port, '127.0.0.1');
      sock.setNoDelay(true);
      await new Promise((r) => sock.once('connect', r));
      const buf = Buffer.alloc(size);
      const rounds = size > 100_000 ? 300 : 3000;
      const us: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const t = process.hrtime.bigint();
        await new Promise<void>((resolve) => {
          let got = 0;
          const onData = (d: Buffer) => {
            got += d.length;
            if (got < size) return;
            sock.off('data', onData);
            resolve();
          };
          sock.on('data', onData);
          sock.write(buf);
        });
        us.push(Number(process.hrtime.bigint() - t) / 1000);
      }
      us.sort((a, b) => a - b);
      const at = (q: number) => us[Math.floor(q * (rounds - 1))]!.toFixed(0);
      console.log(
        `echo ${String(size).padStart(7)} B: median ${at(0.5).padStart(5)} µs, p90 ${at(0.9).padStart(5)} µs`,
      );
      sock.destroy();
    }
  } finally {
    child.kill();
  }
}
