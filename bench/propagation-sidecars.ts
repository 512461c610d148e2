// Simulated sidecars for the propagation benchmark (bench/propagation.ts): `--count` ControlClients
// in this one process, each on its own HTTP/2 connection to the config service, as that many
// pods would be. Each applies what is pushed as a sidecar does before it ACKs: parses the YAML
// with the policy parser (src/policy/parse.ts) and takes the policy's deadlineHeader as "what
// runs". It records, per sidecar, when the update arrived and when it was applied, on the
// machine's wall clock (Date.now(), which the bench and the service's log lines use too).
//
//   node bench/propagation-sidecars.ts --target 127.0.0.1:PORT --count 200 [--first 0]
//       [--service checkout] [--heartbeat-ms 5000]
//
// Prints `listening PORT`; control on 127.0.0.1:PORT:
//   GET /status             {sidecars, connected, applied: {header: count}, nacks, lastNack}
//   GET /applies?header=H   [{id, receivedAt, appliedAt, workMs}] of the sidecars that applied header H
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { ControlClient, type ApplyResult } from '../src/control/client.ts';
import type { Health, PolicyUpdate } from '../src/control/protocol.ts';
import { formatPolicyError, parsePolicy } from '../src/policy/parse.ts';
import { listenLoopback, replyJson } from './lib/serve.ts';

const { values } = parseArgs({
  options: {
    target: { type: 'string' },
    count: { type: 'string', default: '200' },
    first: { type: 'string', default: '0' },
    service: { type: 'string', default: 'checkout' },
    'heartbeat-ms': { type: 'string', default: '5000' },
  },
  strict: true,
});
const count = Number(values.count);
const first = Number(values.first);
const heartbeatMs = Number(values['heartbeat-ms']);
if (values.target === undefined) throw new Error('--target host:port is required');
if (!Number.isInteger(count) || count < 1 || count > 10_000) throw new Error(`--count must be an integer from 1 to 10000, got ${values.count}`);
if (!Number.isInteger(first) || first < 0) throw new Error(`--first must be a non-negative integer, got ${values.first}`);
if (!Number.isFinite(heartbeatMs) || heartbeatMs < 100) throw new Error(`--heartbeat-ms must be at least 100, got ${values['heartbeat-ms']}`);

// grpc-js shares one connection between channels to the same address. Real sidecars are separate
// processes with a connection each, and the service's per-stream work (HTTP/2 frames, writes) is
// what is measured, so every simulated sidecar gets its own subchannel pool, hence connection.
const OWN_CONNECTION = { 'grpc.use_local_subchannel_pool': 1 };

const now = (): number => Date.now();
const log = pino({ level: 'warn', base: { service: 'propagation-sidecars' } }, pino.destination(2));

const HEALTH: Health = {
  requestsPerSecond: 0,
  errorsPerSecond: 0,
  refusalsPerSecond: 0,
  breakers: [],
  credits: [],
  budgetExhaustedTotal: 0,
  budgets: [],
  state: 'ready',
};

interface Applied {
  id: string;
  receivedAt: number;
  appliedAt: number;
  /** Parse and apply, on the monotonic clock (sub-ms). */
  workMs: number;
}

/** header -> the sidecars that applied it. Bounded: one entry per sidecar per update pushed. */
const applies = new Map<string, Applied[]>();
let connected = 0;
let nacks = 0;
let lastNack: string | undefined;

const clients: ControlClient[] = [];
for (let i = first; i < first + count; i++) {
  const id = `sim-${String(i).padStart(4, '0')}`;
  let applied = { version: '', commit: '' };
  const apply = async (update: PolicyUpdate): Promise<ApplyResult> => {
    const receivedAt = now();
    const start = performance.now();
    const parsed = parsePolicy(update.policyYaml, update.file);
    if (!parsed.ok) {
      nacks++;
      lastNack = `${id}: ${parsed.errors.map(formatPolicyError).join('; ')}`;
      return { ok: false, message: `${update.file}: policy rejected by the simulated sidecar`, errors: parsed.errors.map(formatPolicyError) };
    }
    applied = { version: update.version, commit: update.commit };
    const header = parsed.policy.deadlineHeader;
    let list = applies.get(header);
    if (list === undefined) applies.set(header, (list = []));
    list.push({ id, receivedAt, appliedAt: now(), workMs: performance.now() - start });
    return { ok: true };
  };
  const client = new ControlClient({
    targets: [values.target],
    identity: { sidecarId: id, service: values.service, labels: { app: values.service }, sluiceVersion: 'bench' },
    heartbeatMs,
    channelOptions: OWN_CONNECTION,
    backoff: { baseMs: 250, capMs: 10_000 },
    log,
    applied: () => applied,
    apply,
    health: async () => HEALTH,
    onConnected: (up) => {
      connected += up ? 1 : -1;
    },
  });
  clients.push(client);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://sim');
  if (url.pathname === '/status') {
    const byHeader: Record<string, number> = {};
    for (const [h, list] of applies) byHeader[h] = list.length;
    return replyJson(res, 200, { sidecars: count, connected, applied: byHeader, nacks, lastNack: lastNack ?? null });
  }
  if (url.pathname === '/applies') return replyJson(res, 200, applies.get(url.searchParams.get('header') ?? '') ?? []);
  replyJson(res, 404, { error: `no such endpoint ${url.pathname}` });
});
const port = await listenLoopback(server);
for (const c of clients) c.start();
process.stdout.write(`listening ${port}\n`);

const stop = (): void => {
  server.close();
  void Promise.all(clients.map((c) => c.close())).finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
