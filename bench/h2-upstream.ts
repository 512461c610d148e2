// HTTP/2 benchmark upstream: h2c with prior knowledge (no TLS, no upgrade), answers every
// request with 200 and a fixed 100-byte body, like bench/upstream.ts does over HTTP/1.1.
// Usage: node bench/h2-upstream.ts [port]   (port 0 or omitted = any free port)
// Prints `listening <port>` on stdout once bound; exits on SIGTERM/SIGINT.
import http2 from 'node:http2';

const BODY = Buffer.alloc(100, 'x');
const HEADERS = {
  ':status': 200,
  'content-type': 'text/plain',
  'content-length': String(BODY.length),
};

// Generous stream and window limits: the client side (h2load -m, a sidecar's pool) decides the
// concurrency, so the upstream must not be the one that caps it.
const server = http2.createServer({
  settings: { maxConcurrentStreams: 1000, initialWindowSize: 1 << 20 },
  maxSessionMemory: 64,
});
server.on('stream', (stream) => {
  // Drain any request body before answering so flow control never stalls the session.
  stream.resume();
  stream.on('error', () => {}); // a client reset is not a server failure
  stream.respond(HEADERS);
  stream.end(BODY);
});
server.on('sessionError', () => {});

const port = Number(process.argv[2] ?? 0);
server.listen(port, '127.0.0.1', () => {
  const addr = server.address();
  if (addr !== null && typeof addr === 'object') process.stdout.write(`listening ${addr.port}\n`);
});

const stop = (): void => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
