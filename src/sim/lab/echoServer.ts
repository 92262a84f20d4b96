import { createServer } from 'node:http';

/**
 * The lab's echo server, run inside the carrier namespace: answers every request with the
 * client's source address, so a test sees which address a proxy port really egresses from.
 * Usage: echoServer.ts ADDRESS PORT
 */
const [address = '0.0.0.0', port = '8080'] = process.argv.slice(2);
const server = createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(req.socket.remoteAddress?.replace(/^::ffff:/, '') ?? '');
});
server.listen(Number(port), address, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
