// The admin listener: loopback only by default, since /config shows the policy and /shutdown
// drains the sidecar. Probes are cheap: /healthz says the event loop answers; /readyz says this
// sidecar can do its job now (policy loaded, listeners up, not draining, app reachable).
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Endpoint, ListenerAddress } from '../policy/types.ts';
import { listen } from './listen.ts';

export interface AdminDeps {
  readonly registry: Registry;
  readonly log: Logger;
  /** Reasons the sidecar is not ready, beyond the app probe; empty when ready. */
  notReady(): string[];
  /** The app the inbound side forwards to, when inbound is on. */
  app(): Endpoint | undefined;
  /** The effective policy, as JSON-able data. */
  config(): unknown;
  /** POST /shutdown: start draining, as SIGTERM does. */
  shutdown(): void;
}

export interface Admin {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

/** One TCP connect to the app, bounded; the answer is cached briefly so probes cannot flood it. */
function appProbe(): (app: Endpoint) => Promise<string | undefined> {
  let cached: { key: string; at: number; result: string | undefined } | undefined;
  return (app) => {
    const key = `${app.host}:${app.port}`;
    const now = Date.now();
    if (cached !== undefined && cached.key === key && now - cached.at < 1000) return Promise.resolve(cached.result);
    return new Promise((resolve) => {
      const socket = net.connect({ host: app.host, port: app.port });
      const finish = (result: string | undefined): void => {
        socket.destroy();
        cached = { key, at: Date.now(), result };
        resolve(result);
      };
      socket.setTimeout(1000, () => finish(`app ${key} did not accept a connection within 1000 ms`));
      socket.once('connect', () => finish(undefined));
      socket.once('error', (err: NodeJS.ErrnoException) => finish(`app ${key} unreachable: ${err.code ?? err.message}`));
    });
  };
}

export async function startAdmin(addr: ListenerAddress, deps: AdminDeps): Promise<Admin> {
  const probe = appProbe();

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    switch (path) {
      case '/healthz':
        send(200, 'ok\n');
        return;
      case '/readyz': {
        const reasons = deps.notReady();
        const app = deps.app();
        void (reasons.length === 0 && app !== undefined ? probe(app) : Promise.resolve(undefined)).then((appReason) => {
          if (appReason !== undefined) reasons.push(appReason);
          send(reasons.length === 0 ? 200 : 503, reasons.length === 0 ? 'ready\n' : `not ready: ${reasons.join('; ')}\n`);
        });
        return;
      }
      case '/config':
        send(200, `${JSON.stringify(deps.config(), null, 2)}\n`, 'application/json');
        return;
      case '/metrics':
        deps.registry.metrics().then(
          (text) => send(200, text, deps.registry.contentType),
          (err: unknown) => send(500, `metrics failed: ${String(err)}\n`),
        );
        return;
      case '/shutdown':
        if (req.method !== 'POST') {
          res.setHeader('allow', 'POST');
          send(405, 'use POST\n');
          return;
        }
        send(202, 'draining\n');
        deps.shutdown();
        return;
      default:
        send(404, 'not found: try /healthz /readyz /config /metrics\n');
    }
  });

  const address = await listen(server, addr);
  deps.log.info({ address: address.address, port: address.port }, 'admin up');
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
