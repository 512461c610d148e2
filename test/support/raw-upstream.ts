// Upstreams below HTTP: a bare TCP server for byte-level behaviour no HTTP server would produce,
// and a port that refuses connections (a dead endpoint).
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';

export interface RawUpstream {
  readonly port: number;
  readonly endpoint: string;
  /** Connections accepted so far. */
  readonly connections: number;
  close(): Promise<void>;
}

/** A bare TCP server for behaviour no HTTP server would produce; the callback owns the socket. */
export async function startRawUpstream(onConnection: (socket: Socket, n: number) => void): Promise<RawUpstream> {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: NetServer = createNetServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    onConnection(socket, connections);
  });
  const port = await listenLocal(server);
  return {
    port,
    endpoint: `127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}

/** A port that refuses connections: bound once to learn a free port, then closed. */
export async function deadPort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Starts a server that takes its port as an argument (redis-server, prometheus) on a loopback
 * port found free, and on another when `taken(err)` says one was bound in between by someone
 * else (tests run in parallel); at most five tries.
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>, taken: (err: unknown) => boolean): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await start(await deadPort());
    } catch (err) {
      if (attempt >= 4 || !taken(err)) throw err;
    }
  }
}

/** Binds a test server to a free loopback port. */
export async function listenLocal(server: NetServer, host = '127.0.0.1', port = 0): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return (server.address() as AddressInfo).port;
}
