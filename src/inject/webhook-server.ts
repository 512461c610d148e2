// The admission webhook's HTTPS server: POST /inject (AdmissionReview v1), GET /healthz. TLS is
// required by the API server; the certificate can be swapped while running (a rotated Secret).
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { parseReview, review, ReviewError } from './admission.ts';
import type { WorkloadOptions } from './workloads.ts';

export interface WebhookOptions {
  readonly host: string;
  readonly port: number;
  readonly cert: Buffer | string;
  readonly key: Buffer | string;
  readonly workload: WorkloadOptions;
  readonly log: Logger;
  /** Bigger bodies get 413. An AdmissionReview holds the object (and, on updates, the old one). */
  readonly maxBodyBytes?: number;
}

export interface Webhook {
  readonly address: AddressInfo;
  /** New connections use this certificate from now on. */
  setCertificate(cert: Buffer | string, key: Buffer | string): void;
  /** Stops accepting, lets requests in flight finish. */
  close(): Promise<void>;
}

/** The API server's etcd objects are at most ~1.5 MiB; a review carries up to two of them. */
const MAX_BODY_BYTES = 8 * 1024 * 1024;

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        // Read no more; the connection is closed once the 413 is out.
        req.removeAllListeners('data');
        req.pause();
        resolve(undefined);
        return;
      }
      chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

export async function startWebhook(o: WebhookOptions): Promise<Webhook> {
  const limit = o.maxBodyBytes ?? MAX_BODY_BYTES;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // The API server adds ?timeout=10s; only the path routes.
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      send(res, 200, 'ok\n');
      return;
    }
    if (path !== '/inject') {
      send(res, 404, 'not found: POST /inject (AdmissionReview v1), GET /healthz\n');
      return;
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      send(res, 405, 'use POST with an AdmissionReview v1\n');
      return;
    }
    const body = await readBody(req, limit);
    if (body === undefined) {
      res.setHeader('connection', 'close');
      res.once('finish', () => req.destroy());
      send(res, 413, `AdmissionReview larger than ${limit} bytes\n`);
      return;
    }
    let result;
    try {
      result = review(parseReview(body), o.workload);
    } catch (err) {
      if (!(err instanceof ReviewError)) throw err;
      o.log.warn({ reason: err.message }, 'malformed AdmissionReview');
      send(res, 400, `malformed AdmissionReview: ${err.message}\n`);
      return;
    }
    const response = result.review.response as { uid: string };
    o.log.info({ uid: response.uid, outcome: result.outcome, reason: result.reason }, 'admission review');
    send(res, 200, JSON.stringify(result.review), 'application/json');
  };

  const server = https.createServer({ cert: o.cert, key: o.key, minVersion: 'TLSv1.2' }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      o.log.error({ err }, 'webhook request failed');
      if (!res.headersSent) send(res, 500, 'internal error\n');
      else res.destroy();
    });
  });
  // The API server gives a webhook 10 s by default (timeoutSeconds); nothing here takes longer.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  o.log.info({ address: address.address, port: address.port }, 'webhook up');
  return {
    address,
    setCertificate: (cert, key) => server.setSecureContext({ cert, key }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
