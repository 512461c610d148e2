// Small pieces of the bench's own HTTP servers (the scripted upstreams and apps): bind to
// loopback on a free port, answer a control request with JSON.
import type { Server, ServerResponse } from 'node:http';

/** Listens on 127.0.0.1, port 0; resolves with the port the kernel picked. */
export function listenLoopback(server: Server, backlog = 511): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', backlog, () => {
      const addr = server.address();
      resolve(addr !== null && typeof addr === 'object' ? addr.port : 0);
    });
  });
}

export function replyJson(res: ServerResponse, code: number, body: unknown): void {
  const s = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(s)) });
  res.end(s);
}
