// Benchmark upstream: answers every request with 200 and a fixed 100-byte body, keep-alive.
// Usage: node bench/upstream.ts [port]   (port 0 or omitted = any free port)
// Prints `listening <port>` on stdout once bound; exits on SIGTERM/SIGINT.
import http from 'node:http';

const BODY = Buffer.alloc(100, 'x');
const HEADERS = {
  'content-type': 'text/plain',
  'content-length': String(BODY.length),
};

const server = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 }, (req, res) => {
  // Drain any request body before answering so the connection stays reusable.
  if (req.readableEnded) {
    res.writeHead(200, HEADERS);
    res.end(BODY);
    return;
  }
  req.resume();
  req.on('end', () => {
    res.writeHead(200, HEADERS);
    res.end(BODY);
  });
});
server.maxRequestsPerSocket = 0;
server.headersTimeout = 60_000;

const port = Number(process.argv[2] ?? 0);
server.listen(port, '127.0.0.1', () => {
  const addr = server.address();
  if (addr !== null && typeof addr === 'object') process.stdout.write(`listening ${addr.port}\n`);
});

const stop = (): void => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
