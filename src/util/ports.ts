import { createServer } from 'node:net';

/** Is something listening on host:port (default 127.0.0.1)? */
export function portInUse(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const server = createServer();
    server.once('error', () => resolvePromise(true));
    server.listen({ port, host, exclusive: true }, () => {
      server.close(() => resolvePromise(false));
    });
  });
}

/** A free TCP port on host (default 127.0.0.1) picked by the kernel. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen({ port: 0, host }, () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolvePromise(address.port);
        else reject(new Error('no port assigned'));
      });
    });
  });
}
