// What sits between load and upstream in each row of the overhead benchmark (bench/run.ts):
// nothing (direct), one sluice sidecar's outbound listener, two sidecars (outbound -> inbound),
// nginx, haproxy. The same rows serve HTTP/1.1 and HTTP/2: for HTTP/2 sluice is told to speak
// h2c to what is behind it, nginx listens with `http2` and forwards with grpc_pass, haproxy
// uses `proto h2` on both sides.
import path from 'node:path';
import type { Proc } from './lib/procs.ts';
import { freePort, waitFor } from './lib/procs.ts';
import type { SluiceProtocol } from './lib/proxies.ts';
import {
  haproxyConf,
  launchHaproxy,
  launchNginx,
  nginxConf,
  sluiceMissing,
  sluicePolicy,
  startHaproxy,
  startNginx,
  startSluice as startSluiceProc,
  toolMissing,
} from './lib/proxies.ts';
import type { TargetSpec } from './overhead-rows.ts';
import { otlpSink } from './lib/otlp-sink.ts';
import { P } from './overhead-params.ts';

/** The authority every row's requests carry: sluice's outbound listener routes on it. */
export const AUTHORITY = 'bench';

/** Policy for one bench sidecar: outbound to upstream `bench`, or inbound to the app; `protocol` toward either. */
function benchPolicy(
  name: string,
  adminPort: number,
  outbound: { port: number; endpoint: string } | undefined,
  inbound: { port: number; appPort: number } | undefined,
  protocol: SluiceProtocol | undefined,
): string {
  const proto = protocol === undefined ? {} : { protocol };
  return sluicePolicy({
    name,
    adminPort,
    graceMs: 2000,
    ...(outbound === undefined
      ? {}
      : { outbound: { port: outbound.port, upstream: AUTHORITY, hosts: [AUTHORITY], endpoints: [outbound.endpoint], ...proto } }),
    ...(inbound === undefined ? {} : { inbound: { ...inbound, ...proto } }),
  });
}

async function startSluice(tmp: string, name: string, policy: string, adminPort: number, env?: Record<string, string>): Promise<Proc> {
  return startSluiceProc(path.join(tmp, `${name}.yaml`), policy, name, adminPort, P.serverCpu, P.nice, P.sluiceNodeFlags, env);
}

/**
 * sluice outbound with tracing on, sampling `ratio` of the (untraced) requests as new roots, the
 * spans sent OTLP/HTTP protobuf to a sink in the runner. Batches go out every second so the run
 * exports under load, not only at the end.
 */
function tracedRow(ratio: number): TargetSpec {
  const pct = Math.round(ratio * 100);
  return {
    id: `sluice-traced-${pct}`,
    label: `sluice outbound, tracing ${pct}%`,
    skip: sluiceMissing,
    start: async (tmp, serverPort) => {
      const sink = await otlpSink();
      const admin = await freePort();
      const out = await freePort();
      const policy = benchPolicy('bench-a', admin, { port: out, endpoint: `127.0.0.1:${serverPort}` }, undefined, undefined);
      const a = await startSluice(tmp, 'sluice-a', policy, admin, {
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: sink.url,
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: String(ratio),
        OTEL_BSP_SCHEDULE_DELAY: '1000',
      });
      return { port: out, procs: [a] };
    },
  };
}

/** direct, sluice outbound, sluice outbound -> inbound; `protocol` omitted = sluice's default. */
function sluiceRows(protocol: SluiceProtocol | undefined): TargetSpec[] {
  return [
    {
      id: 'direct',
      label: 'direct',
      skip: () => undefined,
      start: async (_tmp, serverPort) => ({ port: serverPort, procs: [] }),
    },
    {
      id: 'sluice-outbound',
      label: 'sluice outbound',
      skip: sluiceMissing,
      start: async (tmp, serverPort) => {
        const admin = await freePort();
        const out = await freePort();
        const policy = benchPolicy('bench-a', admin, { port: out, endpoint: `127.0.0.1:${serverPort}` }, undefined, protocol);
        const a = await startSluice(tmp, 'sluice-a', policy, admin);
        return { port: out, procs: [a] };
      },
    },
    {
      id: 'sluice-mesh',
      label: 'sluice outbound→inbound',
      skip: sluiceMissing,
      start: async (tmp, serverPort) => {
        const adminB = await freePort();
        const inB = await freePort();
        const b = await startSluice(tmp, 'sluice-b', benchPolicy('bench-b', adminB, undefined, { port: inB, appPort: serverPort }, protocol), adminB);
        const adminA = await freePort();
        const outA = await freePort();
        const a = await startSluice(tmp, 'sluice-a', benchPolicy('bench-a', adminA, { port: outA, endpoint: `127.0.0.1:${inB}` }, undefined, protocol), adminA);
        return { port: outA, procs: [a, b], rssNote: 'sum of A and B' };
      },
    },
  ];
}

/** The HTTP/1.1 rows: sluice with its default protocol, nginx proxy_pass, haproxy mode http. */
export function http1Targets(): TargetSpec[] {
  return [
    ...sluiceRows(undefined),
    tracedRow(0.1),
    tracedRow(1),
    {
      id: 'nginx',
      label: 'nginx',
      skip: () => toolMissing('nginx'),
      start: async (tmp, serverPort) => {
        const dir = path.join(tmp, 'nginx');
        const port = await freePort();
        const conf = nginxConf({ dir, port, errorLogLevel: 'warn', upstream: AUTHORITY, servers: [`server 127.0.0.1:${serverPort};`] });
        const proc = await startNginx(dir, conf, port, P.serverCpu, P.nice);
        return { port, procs: [proc], rssNote: 'sum of master and worker' };
      },
    },
    {
      id: 'haproxy',
      label: 'haproxy',
      skip: () => toolMissing('haproxy'),
      start: async (tmp, serverPort) => {
        const port = await freePort();
        const conf = haproxyConf({ port, timeoutServer: '120s', backend: [`server s1 127.0.0.1:${serverPort}`] });
        const proc = await startHaproxy(path.join(tmp, 'haproxy.cfg'), conf, port, P.serverCpu, P.nice);
        return { port, procs: [proc] };
      },
    },
  ];
}

/**
 * The HTTP/2 rows (plain h2 and gRPC alike): h2c with prior knowledge on every hop. `probe` is
 * the scenario's one-request check, used as nginx's and haproxy's readiness (they do not answer
 * HTTP/1.1 on an h2-only listener). `haproxyBroken`: why this scenario skips haproxy unless
 * its row id is named in BENCH_ROWS (it runs, but its figures would not be a clean comparison).
 */
export function h2Targets(
  probe: (port: number) => Promise<string | undefined>,
  haproxyBroken?: { rowId: string; why: string },
): TargetSpec[] {
  const askedFor = haproxyBroken !== undefined && P.rows.includes(haproxyBroken.rowId);
  const answers = (port: number) => async (): Promise<boolean> => (await probe(port)) === undefined;
  return [
    ...sluiceRows('http2'),
    {
      id: 'nginx',
      label: 'nginx (grpc_pass)',
      skip: () => toolMissing('nginx'),
      start: async (tmp, serverPort) => {
        const dir = path.join(tmp, 'nginx-h2');
        const port = await freePort();
        const conf = nginxConf({ dir, port, errorLogLevel: 'warn', upstream: AUTHORITY, servers: [`server 127.0.0.1:${serverPort};`], http2: true });
        const proc = launchNginx(dir, conf, P.serverCpu, P.nice);
        await waitFor('nginx', [proc], answers(port));
        return { port, procs: [proc], rssNote: 'sum of master and worker' };
      },
    },
    {
      id: 'haproxy',
      label: 'haproxy',
      skip: () =>
        toolMissing('haproxy') ??
        (haproxyBroken === undefined || askedFor ? undefined : `${haproxyBroken.why} (bench/README.md); BENCH_ROWS=${haproxyBroken.rowId} runs it anyway`),
      start: async (tmp, serverPort) => {
        const port = await freePort();
        const conf = haproxyConf({ port, timeoutServer: '120s', backend: [`server s1 127.0.0.1:${serverPort} proto h2`], h2: true });
        const proc = launchHaproxy(path.join(tmp, 'haproxy-h2.cfg'), conf, P.serverCpu, P.nice);
        await waitFor('haproxy', [proc], answers(port));
        return { port, procs: [proc] };
      },
    },
  ];
}
