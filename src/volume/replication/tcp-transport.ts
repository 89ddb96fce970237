/** Replication over TCP: no Nagle delay (every frame is corked and sent whole already). */
import { connect, createServer } from 'node:net';
import type { Dialing, Endpoint, Listener, Transport } from './transport.ts';

export const tcpTransport: Transport = {
  connect(host, port): Dialing {
    const socket = connect({ host, port });
    socket.setNoDelay(true);
    return socket;
  },

  async listen(host, port, onAccept: (endpoint: Endpoint) => void): Promise<Listener> {
    const server = createServer((socket) => {
      socket.setNoDelay(true);
      onAccept(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // Later errors (an accept failing) must not crash the daemon; each socket reports its own.
    server.on('error', () => undefined);
    const addr = server.address();
    return {
      port: typeof addr === 'object' && addr ? addr.port : port,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  },
};
