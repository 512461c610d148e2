// `sluice control`: follows a git repository of policy files, validates each commit as a whole,
// and pushes every connected sidecar its policy over one gRPC stream each. Stateless over git:
// each replica follows the repository itself, so replicas run side by side and a sidecar may
// connect to any of them. A bad commit never reaches a sidecar: the last good one keeps being
// served, and the bad commit's SHA and errors are shown in the API, the logs and the metrics.
import * as grpc from '@grpc/grpc-js';
import { timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { counter, gauge, histogram } from '../telemetry/registry.ts';
import { listen } from '../proxy/listen.ts';
import { Fleet, type SidecarRecord } from './fleet.ts';
import { GitFollower, type GitFollowError, type RepoSnapshot } from './git-follower.ts';
import { buildPolicySet } from './policy-set.ts';
import {
  AUTH_METADATA,
  POLICY_DISCOVERY_SERVICE,
  SERVER_KEEPALIVE_OPTIONS,
  type ControlMessage,
  type ControlStream,
  type Health,
  type Hello,
  type SidecarMessage,
} from './protocol.ts';
import { fleetView, type FleetView } from './fleet-view.ts';
import { serveStatusPage } from './status-page.ts';
import { TraceReceiver } from './traces/receiver.ts';
import type { TraceStoreLimits } from './traces/store.ts';

export interface TlsFiles {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** With a client CA, every sidecar must present a certificate it signed (mTLS). */
  readonly clientCa?: Buffer | undefined;
}

export interface ControlOptions {
  readonly repo: string;
  readonly branch: string;
  readonly subdir?: string | undefined;
  readonly workDir: string;
  readonly pollMs: number;
  readonly debounceMs: number;
  readonly gitTimeoutMs: number;
  readonly grpc: { readonly host: string; readonly port: number };
  readonly api: { readonly host: string; readonly port: number };
  /** Bearer token every stream and API call must carry; undefined: no token (loopback tests). */
  readonly token: string | undefined;
  readonly tls?: TlsFiles | undefined;
  readonly maxSidecars: number;
  readonly log: Logger;
  /** The OTLP trace receiver: its bounds, and a collector to forward every export to. */
  readonly traces?: { readonly forwardUrl?: string | undefined; readonly limits?: TraceStoreLimits | undefined } | undefined;
}

export interface ControlService {
  readonly grpcPort: number;
  readonly apiPort: number;
  readonly fleet: Fleet;
  readonly registry: Registry;
  /** Fetch now (as the webhook does) and resolve when the commit, if new, was handled. */
  refresh(): Promise<void>;
  view(): FleetView;
  close(): Promise<void>;
}

/** A stream that says nothing within this long after opening is closed. */
const HELLO_TIMEOUT_MS = 10_000;
const MAX_WEBHOOK_BODY = 1024 * 1024;

function tokenMatches(expected: string, given: string | undefined): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(`Bearer ${expected}`);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Bounds on what a sidecar says about itself: the fleet keeps it for every sidecar. */
const MAX_LABELS = 64;
const MAX_LIST = 1024;

/** Why a hello is refused, or undefined: ids and labels of the sizes Kubernetes allows. */
function helloProblem(h: Hello): string | undefined {
  if (h.sidecarId === '' || h.sidecarId.length > 253) return 'the hello needs a sidecar id of 1 to 253 characters';
  if (h.service.length > 63) return 'the service name is longer than 63 characters';
  const labels = Object.entries(h.labels);
  if (labels.length > MAX_LABELS) return `at most ${MAX_LABELS} labels, got ${labels.length}`;
  for (const [k, v] of labels) if (k.length > 317 || v.length > 63) return `label ${JSON.stringify(k.slice(0, 40))} is longer than Kubernetes allows`;
  return undefined;
}

function boundedHealth(h: Health): Health {
  return { ...h, breakers: h.breakers.slice(0, MAX_LIST), credits: h.credits.slice(0, MAX_LIST), budgets: h.budgets.slice(0, MAX_LIST) };
}

function declareMetrics(registry: Registry) {
  return {
    connected: gauge(registry, 'sluice_control_sidecars_connected', 'Sidecars with an open stream to this replica.', []),
    commits: counter(registry, 'sluice_control_commits_total', 'Commits read from the policy repository, by result: applied or rejected (invalid).', ['result']),
    commitInfo: gauge(registry, 'sluice_control_commit_info', 'The commit served (value 1), and the last rejected one (state="rejected").', ['commit', 'state']),
    fetchErrors: counter(registry, 'sluice_control_fetch_errors_total', 'Failed fetches or reads of the policy repository, by code.', ['code']),
    pushes: counter(registry, 'sluice_control_pushes_total', 'Policy updates sent to sidecars.', []),
    answers: counter(registry, 'sluice_control_answers_total', 'Sidecar answers to updates: ack or nack.', ['result']),
    ackSeconds: histogram(registry, 'sluice_control_ack_seconds', 'From sending an update until its ACK.', [], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    refused: counter(registry, 'sluice_control_streams_refused_total', 'Streams refused, by why: unauthenticated, no_hello, full.', ['why']),
  };
}

export async function startControl(opts: ControlOptions): Promise<ControlService> {
  const { log } = opts;
  const registry = new Registry();
  const m = declareMetrics(registry);
  let rejected: { commit: string; errors: readonly string[]; atMs: number } | undefined;

  const fleet = new Fleet(
    {
      pushed: () => m.pushes.inc(),
      acked: (r, latencyMs) => {
        m.answers.labels({ result: 'ack' }).inc();
        m.ackSeconds.observe(latencyMs / 1000);
        log.info({ sidecar: r.id, version: r.appliedVersion, commit: r.appliedCommit }, 'sidecar applied policy');
      },
      nacked: (r) => {
        m.answers.labels({ result: 'nack' }).inc();
        log.warn({ sidecar: r.id, refused: r.lastError?.version, kept: r.lastError?.kept, errors: r.lastError?.errors, message: r.lastError?.message }, 'sidecar refused policy');
      },
    },
    opts.maxSidecars,
  );
  (m.connected as unknown as { collect?: () => void }).collect = () => m.connected.set(fleet.connected);

  function onSnapshot(s: RepoSnapshot): void {
    const result = buildPolicySet(s.commit, s.files);
    if (!result.ok) {
      m.commits.labels({ result: 'rejected' }).inc();
      if (rejected !== undefined) m.commitInfo.remove({ commit: rejected.commit, state: 'rejected' });
      rejected = { commit: s.commit, errors: result.errors, atMs: Date.now() };
      m.commitInfo.labels({ commit: s.commit, state: 'rejected' }).set(1);
      log.error({ commit: s.commit, errors: result.errors, serving: fleet.set?.commit }, 'commit rejected; the last good commit keeps being served');
      return;
    }
    const previous = fleet.set?.commit;
    if (previous !== undefined) m.commitInfo.remove({ commit: previous, state: 'serving' });
    m.commitInfo.labels({ commit: s.commit, state: 'serving' }).set(1);
    m.commits.labels({ result: 'applied' }).inc();
    // A good commit after a bad one: the bad one is history, not a current problem.
    if (rejected !== undefined) {
      m.commitInfo.remove({ commit: rejected.commit, state: 'rejected' });
      rejected = undefined;
    }
    log.info({ commit: s.commit, policies: result.set.entries.map((e) => `${e.file}@${e.version}`) }, 'commit applied');
    fleet.apply(result.set);
  }

  const follower = new GitFollower(
    {
      repo: opts.repo,
      branch: opts.branch,
      workDir: opts.workDir,
      intervalMs: opts.pollMs,
      debounceMs: opts.debounceMs,
      timeoutMs: opts.gitTimeoutMs,
      ...(opts.subdir === undefined ? {} : { subdir: opts.subdir }),
      log,
    },
    {
      snapshot: onSnapshot,
      // Told once per outage; follower.lastError says whether it is still on.
      error: (err: GitFollowError) => m.fetchErrors.labels({ code: err.code }).inc(),
    },
  );

  function stream(call: ControlStream): void {
    const peer = call.getPeer();
    if (opts.token !== undefined && !tokenMatches(opts.token, call.metadata.get(AUTH_METADATA)[0] as string | undefined)) {
      m.refused.labels({ why: 'unauthenticated' }).inc();
      log.warn({ peer }, 'stream refused: missing or wrong bearer token');
      call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: 'a valid bearer token is required' });
      return;
    }
    let record: SidecarRecord | undefined;
    const send = (msg: ControlMessage): void => {
      call.write(msg);
    };
    const helloTimer = setTimeout(() => {
      m.refused.labels({ why: 'no_hello' }).inc();
      call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'the stream must open with a hello' });
    }, HELLO_TIMEOUT_MS);
    call.on('data', (msg: SidecarMessage) => {
      if (record === undefined) {
        const hello = msg.hello;
        const bad = hello == null ? 'the first message must be a hello with a sidecar id' : helloProblem(hello);
        if (hello == null || bad !== undefined) {
          clearTimeout(helloTimer);
          m.refused.labels({ why: 'no_hello' }).inc();
          call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: bad });
          return;
        }
        clearTimeout(helloTimer);
        record = fleet.connect(hello, send);
        if (record === undefined) {
          m.refused.labels({ why: 'full' }).inc();
          call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: `this replica serves at most ${opts.maxSidecars} sidecars` });
          return;
        }
        // Headers now, so the sidecar knows it is connected before any update.
        call.sendMetadata(new grpc.Metadata());
        log.info({ sidecar: hello.sidecarId, service: hello.service, runs: hello.appliedVersion, peer }, 'sidecar connected');
        return;
      }
      if (msg.ack != null) fleet.ack(record, msg.ack);
      else if (msg.heartbeat?.health != null) fleet.heartbeat(record, boundedHealth(msg.heartbeat.health));
    });
    const end = (): void => {
      clearTimeout(helloTimer);
      if (record !== undefined) {
        fleet.disconnect(record, send);
        log.info({ sidecar: record.id }, 'sidecar disconnected');
      }
    };
    call.on('error', end);
    call.on('end', () => {
      end();
      call.end();
    });
    call.on('cancelled', end);
  }

  const server = new grpc.Server(SERVER_KEEPALIVE_OPTIONS);
  server.addService(POLICY_DISCOVERY_SERVICE, { stream });
  const credentials =
    opts.tls === undefined
      ? grpc.ServerCredentials.createInsecure()
      : grpc.ServerCredentials.createSsl(opts.tls.clientCa ?? null, [{ cert_chain: opts.tls.cert, private_key: opts.tls.key }], opts.tls.clientCa !== undefined);
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${opts.grpc.host.includes(':') ? `[${opts.grpc.host}]` : opts.grpc.host}:${opts.grpc.port}`, credentials, (err, port) => (err ? reject(err) : resolve(port))),
  );

  const view = (): FleetView => {
    const fetchError = follower.lastError;
    return fleetView(fleet, { repo: opts.repo, branch: opts.branch, rejected, fetchError: fetchError === undefined ? undefined : { code: fetchError.code, message: fetchError.message } });
  };

  const traces = new TraceReceiver({
    registry,
    log,
    ...(opts.traces?.limits === undefined ? {} : { limits: opts.traces.limits }),
    forwardUrl: opts.traces?.forwardUrl,
  });

  const api = http.createServer((req, res) => {
    // The path only, without URL parsing: a target like `//x:99999` must not throw here.
    const target = req.url ?? '/';
    const query = target.indexOf('?');
    const url = { pathname: query < 0 ? target : target.slice(0, query) };
    const reply = (status: number, body: unknown, type = 'application/json'): void => {
      const text = typeof body === 'string' ? body : `${JSON.stringify(body, null, 2)}\n`;
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (url.pathname === '/healthz') return reply(200, 'ok\n', 'text/plain');
    // The page itself is static and public; the data it asks for needs the token.
    if (serveStatusPage(req, res, url.pathname)) return;
    if (url.pathname === '/readyz') {
      // Ready once a good commit is there to hand out.
      return fleet.set === undefined ? reply(503, 'no good commit yet\n', 'text/plain') : reply(200, 'ready\n', 'text/plain');
    }
    if (url.pathname === '/metrics') {
      registry.metrics().then(
        (text) => reply(200, text, registry.contentType),
        (err: unknown) => reply(500, { error: `metrics: ${(err as Error).message}` }),
      );
      return;
    }
    if (url.pathname === '/v1/refresh' && req.method === 'POST') {
      // A webhook (GitHub, GitLab, Gitea: any POST). Forges sign their webhooks rather than send
      // a bearer token, so this takes none: it only schedules a fetch of the configured branch,
      // debounced, and reveals nothing. Its body is not trusted or needed, only drained.
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_WEBHOOK_BODY) req.destroy();
      });
      req.on('end', () => {
        follower.poke();
        reply(202, { fetching: true });
      });
      return;
    }
    if (opts.token !== undefined && !tokenMatches(opts.token, req.headers.authorization)) {
      return reply(401, { error: 'a valid bearer token is required (Authorization: Bearer ...)' });
    }
    if (url.pathname === '/v1/fleet' && req.method === 'GET') return reply(200, view());
    if (url.pathname === '/v1/traces') {
      if (req.method === 'POST') return traces.handleExport(req, res);
      if (req.method === 'GET') return traces.handleList(res, new URLSearchParams(query < 0 ? '' : target.slice(query + 1)));
      res.setHeader('allow', 'GET, POST');
      return reply(405, { error: 'POST an OTLP export, or GET the list' });
    }
    if (url.pathname.startsWith('/v1/traces/') && req.method === 'GET') return traces.handleGet(res, url.pathname.slice('/v1/traces/'.length));
    reply(404, { error: `no such endpoint: ${req.method} ${url.pathname}` });
  });
  const apiAddress = await listen(api, opts.api);

  await follower.start();
  log.info({ grpcPort, apiPort: apiAddress.port, repo: opts.repo, branch: opts.branch, commit: fleet.set?.commit }, 'sluice control started');

  return {
    grpcPort,
    apiPort: (apiAddress as AddressInfo).port,
    fleet,
    registry,
    refresh: () => follower.refresh(),
    view,
    async close() {
      await follower.close();
      traces.close();
      server.forceShutdown();
      api.closeAllConnections();
      await new Promise<void>((resolve) => api.close(() => resolve()));
    },
  };
}
