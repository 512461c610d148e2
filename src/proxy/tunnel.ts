// Byte tunnels for what is not request/response: `Upgrade` (WebSocket and friends) and CONNECT
// (HTTPS through the forward proxy). They bypass the layer stack, since there is no response to
// retry or classify, but keep the connect timeout and the idle timeout, and are drained like
// everything else on shutdown.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Endpoint } from '../policy/types.ts';

export interface TunnelOptions {
  readonly endpoint: Endpoint;
  readonly connectMs: number;
  /** Neither side sent a byte for this long: both are closed. undefined = off. */
  readonly idleMs: number | undefined;
}

/** How long a refused tunnel client gets to read the refusal before its socket is destroyed. */
const REFUSAL_LINGER_MS = 1000;

function refuse(client: Duplex, status: number, reason: string, code: string): void {
  const body = `${reason}\n`;
  // A CONNECT/Upgrade socket is outside the HTTP server's tracking and timeouts, and the server
  // allows half-open sockets: end() alone would leave it open while the client keeps its side,
  // and block shutdown. Destroy it once the refusal is written, or after a short bound.
  const timer = setTimeout(() => client.destroy(), REFUSAL_LINGER_MS);
  timer.unref();
  client.end(
    `HTTP/1.1 ${status} ${reason}\r\nsluice-error: ${code}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    () => {
      clearTimeout(timer);
      client.destroy();
    },
  );
}

/**
 * Opens the upstream connection; `onOpen` writes what the upstream must see first (the upgrade
 * request head) or what the client must see (CONNECT's 200), then bytes flow both ways.
 */
export function openTunnel(
  client: Duplex,
  head: Buffer,
  opts: TunnelOptions,
  onOpen: (upstream: net.Socket) => void,
  track: (sockets: Duplex[]) => void,
): void {
  const upstream = net.connect({ host: opts.endpoint.host, port: opts.endpoint.port });
  track([client, upstream]);
  let open = false;
  upstream.setTimeout(opts.connectMs);
  const onEarlyError = (): void => {
    upstream.destroy();
    if (!open) refuse(client, 503, 'Service Unavailable', 'connect-failure');
  };
  upstream.once('timeout', onEarlyError);
  upstream.once('error', onEarlyError);
  client.on('error', () => upstream.destroy());
  client.once('close', () => upstream.destroy());
  upstream.once('connect', () => {
    open = true;
    upstream.off('timeout', onEarlyError);
    upstream.setTimeout(0);
    upstream.on('error', () => client.destroy());
    upstream.once('close', () => client.destroy());
    onOpen(upstream);
    if (head.length > 0) upstream.write(head);
    upstream.pipe(client);
    client.pipe(upstream);
    if (opts.idleMs !== undefined) {
      // A socket timeout fires on inactivity in either direction of that socket; both sockets
      // carry every byte of the tunnel, so one watcher on each is enough.
      const idle = (): void => {
        client.destroy();
        upstream.destroy();
      };
      upstream.setTimeout(opts.idleMs, idle);
      if (client instanceof net.Socket) client.setTimeout(opts.idleMs, idle);
    }
  });
}

export { refuse as refuseTunnel };
