import { EchoServer } from '../../echo.js';

/**
 * The lab's echo server, run inside the carrier namespace: the echo endpoint of `modemfleet echo`
 * (src/echo.ts), so a test sees which address a proxy port really egresses from, as the farm's
 * own echo endpoint would. Prints `ready` once listening; exits on SIGTERM.
 * Usage: echoServer.ts ADDRESS PORT
 */
const [host = '0.0.0.0', port = '8080'] = process.argv.slice(2);
const echo = new EchoServer({ host, port: Number(port) });
await echo.start();
process.stdout.write('ready\n');
process.on('SIGTERM', () => void echo.stop().then(() => process.exit(0)));
