// Failover benchmark upstreams: N endpoints in one process, plus a control listener.
//
//   node bench/failover-upstream.ts [count]     (default 3)
//
// Each endpoint answers 200 with a 100-byte body, keep-alive, until the control listener puts it
// in a fault mode:
//   GET /mode?ep=I&m=ok|503|hang   -> endpoint I answers normally / 503 to everything / accepts and
//                                     never answers (requests hung so far stay hung until /reset)
//   GET /reset                     -> all endpoints ok, hung requests destroyed, records cleared
//   GET /stats                     -> JSON: per endpoint the arrival times (epoch ms) of every
//                                     request except health checks (/health), plus mode changes
// Prints `listening <control> <ep0> <ep1> ...` on stdout once bound; exits on SIGTERM/SIGINT.
import http from 'node:http';
import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { listenLoopback, replyJson } from './lib/serve.ts';

const BODY = Buffer.alloc(100, 'x');
const HEADERS = { 'content-type': 'text/plain', 'content-length': String(BODY.length) };
const HEADERS_503 = { 'content-type': 'text/plain', 'content-length': String(BODY.length) };

type Mode = 'ok' | '503' | 'hang';

const now = (): number => performance.timeOrigin + performance.now();

interface Endpoint {
  mode: Mode;
  port: number;
  arrivals: number[];
  health: number;
  hung: Set<ServerResponse>;
  server: http.Server;
}

const count = Number(process.argv[2] ?? 3);
const modeChanges: { at: number; ep: number; mode: Mode }[] = [];

function makeEndpoint(): Endpoint {
  const ep: Endpoint = { mode: 'ok', port: 0, arrivals: [], health: 0, hung: new Set(), server: undefined as unknown as http.Server };
  ep.server = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 }, (req, res) => {
    if (req.url === '/health') ep.health++;
    else ep.arrivals.push(now());
    const answer = (): void => {
      if (ep.mode === 'hang') {
        ep.hung.add(res);
        res.on('close', () => ep.hung.delete(res));
        return;
      }
      if (ep.mode === '503') {
        res.writeHead(503, HEADERS_503);
        res.end(BODY);
        return;
      }
      res.writeHead(200, HEADERS);
      res.end(BODY);
    };
    if (req.readableEnded) answer();
    else {
      req.resume();
      req.on('end', answer);
    }
  });
  ep.server.maxRequestsPerSocket = 0;
  ep.server.headersTimeout = 60_000;
  return ep;
}

const endpoints: Endpoint[] = [];
for (let i = 0; i < count; i++) endpoints.push(makeEndpoint());

const control = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://x');
  const reply = (code: number, body: unknown): void => replyJson(res, code, body);
  if (url.pathname === '/mode') {
    const i = Number(url.searchParams.get('ep'));
    const m = url.searchParams.get('m') as Mode;
    const ep = endpoints[i];
    if (ep === undefined || !['ok', '503', 'hang'].includes(m)) return reply(400, { error: 'bad ep or m' });
    const at = now();
    ep.mode = m;
    modeChanges.push({ at, ep: i, mode: m });
    return reply(200, { at });
  }
  if (url.pathname === '/reset') {
    for (const ep of endpoints) {
      ep.mode = 'ok';
      ep.arrivals = [];
      ep.health = 0;
      for (const r of ep.hung) r.destroy();
      ep.hung.clear();
    }
    modeChanges.length = 0;
    return reply(200, {});
  }
  if (url.pathname === '/stats') {
    return reply(200, {
      modeChanges,
      endpoints: endpoints.map((ep) => ({ port: ep.port, arrivals: ep.arrivals, health: ep.health, hung: ep.hung.size })),
    });
  }
  reply(404, {});
});

const ctlPort = await listenLoopback(control);
for (const ep of endpoints) ep.port = await listenLoopback(ep.server);
process.stdout.write(`listening ${ctlPort} ${endpoints.map((e) => e.port).join(' ')}\n`);

const stop = (): void => {
  for (const ep of endpoints) {
    ep.server.close();
    ep.server.closeAllConnections();
  }
  control.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
