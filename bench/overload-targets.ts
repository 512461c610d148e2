// What fronts the app in each row of the overload benchmark (bench/overload.ts): nginx and
// haproxy from the shared bench configs, and the sluice sidecars with the policies the
// backpressure issue writes. Each row starts its processes pinned and returns one URL per
// producer.
import path from 'node:path';
import type { Proc } from './lib/procs.ts';
import { freePort } from './lib/procs.ts';
import { haproxyConf, nginxConf, sluiceMissing, startHaproxy, startNginx, startSluice, toolMissing } from './lib/proxies.ts';

/** Where and how the proxies run; set once by the bench from its environment. */
export const C = {
  serverCpu: '1',
  producerCpu: '1',
  nice: undefined as number | undefined,
  sluiceNodeFlags: [] as string[],
};

export const HOST = 'app';

export interface Target {
  /** One URL per producer. */
  urls: string[];
  procs: Proc[];
  /** sluice rows: the consumer sidecar's admin port (its inbound requests are the wire count). */
  consumerAdmin?: number;
  producerAdmins?: number[];
}

export interface RowSpec {
  id: string;
  label: string;
  skip(): string | undefined;
  start(tmp: string, appPort: number): Promise<Target>;
}

// Sized for every client connection plus one upstream connection each (5× = 5000 in flight).
export const NGINX_WORKER_CONNECTIONS = 12000;
export const HAPROXY_MAXCONN = 9000;
export const NGINX_LIMIT = ['limit_conn_zone $server_port zone=app:1m;', 'limit_conn app 20;', 'limit_conn_status 503;'];

async function nginxRow(tmp: string, appPort: number, limit: boolean): Promise<Target> {
  const dir = path.join(tmp, limit ? 'nginx-limit' : 'nginx');
  const port = await freePort();
  const conf = nginxConf({
    dir,
    port,
    errorLogLevel: 'crit',
    upstream: 'app',
    servers: [`server 127.0.0.1:${appPort};`],
    workerConnections: NGINX_WORKER_CONNECTIONS,
    ...(limit ? { http: NGINX_LIMIT.slice(0, 1), location: NGINX_LIMIT.slice(1) } : {}),
  });
  const proc = await startNginx(dir, conf, port, C.serverCpu, C.nice, HOST);
  const url = `http://127.0.0.1:${port}/`;
  return { urls: [url, url], procs: [proc] };
}

async function haproxyRow(tmp: string, appPort: number, maxconn: boolean): Promise<Target> {
  const port = await freePort();
  const conf = haproxyConf({
    port,
    timeoutServer: '120s',
    maxconn: HAPROXY_MAXCONN,
    backend: [`server s1 127.0.0.1:${appPort}${maxconn ? ' maxconn 20' : ''}`],
  });
  const proc = await startHaproxy(path.join(tmp, maxconn ? 'haproxy-maxconn.cfg' : 'haproxy.cfg'), conf, port, C.serverCpu, C.nice, HOST);
  const url = `http://127.0.0.1:${port}/`;
  return { urls: [url, url], procs: [proc] };
}

/** The consumer sidecar's policy, in the shape the backpressure issue writes it. */
export function consumerPolicy(admin: number, inPort: number, appPort: number, credits: boolean): string {
  return `apiVersion: sluice.dev/v1alpha1
kind: SidecarPolicy
metadata: { name: overload-consumer }
spec:
  admin: { address: 127.0.0.1, port: ${admin} }
  inbound:
    listener: { address: 127.0.0.1, port: ${inPort} }
    app: { address: 127.0.0.1, port: ${appPort} }
    timeouts: { requestMs: 30000 }
    admission: {}
${credits ? '    credits: {}\n' : ''}  outbound: { listener: off }
`;
}

export function producerPolicy(name: string, admin: number, outPort: number, consumerIn: number, credits: boolean): string {
  return `apiVersion: sluice.dev/v1alpha1
kind: SidecarPolicy
metadata: { name: ${name} }
spec:
  admin: { address: 127.0.0.1, port: ${admin} }
  inbound: { listener: off }
  outbound:
    listener: { address: 127.0.0.1, port: ${outPort} }
    upstreams:
      - name: app
        hosts: [app]
        endpoints: [127.0.0.1:${consumerIn}]
${credits ? '        credits: {}\n' : ''}`;
}

async function sluiceRow(tmp: string, appPort: number, credits: boolean): Promise<Target> {
  const tag = credits ? 'credits-on' : 'credits-off';
  const cAdmin = await freePort();
  const cIn = await freePort();
  const consumer = await startSluice(
    path.join(tmp, `consumer-${tag}.yaml`), consumerPolicy(cAdmin, cIn, appPort, credits),
    'sluice-consumer', cAdmin, C.serverCpu, C.nice, C.sluiceNodeFlags, { POD_NAME: 'consumer-1' },
  );
  const procs = [consumer];
  const urls: string[] = [];
  const producerAdmins: number[] = [];
  for (const n of [1, 2]) {
    const admin = await freePort();
    const out = await freePort();
    const name = `producer-${n}`;
    procs.push(
      await startSluice(path.join(tmp, `${name}-${tag}.yaml`), producerPolicy(name, admin, out, cIn, credits),
        `sluice-${name}`, admin, C.producerCpu, C.nice, C.sluiceNodeFlags, { POD_NAME: name }),
    );
    urls.push(`http://127.0.0.1:${out}/`);
    producerAdmins.push(admin);
  }
  return { urls, procs, consumerAdmin: cAdmin, producerAdmins };
}

export const ROWS: RowSpec[] = [
  { id: 'direct', label: 'direct', skip: () => undefined, start: async (_t, app) => ({ urls: [`http://127.0.0.1:${app}/`, `http://127.0.0.1:${app}/`], procs: [] }) },
  { id: 'nginx', label: 'nginx', skip: () => toolMissing('nginx'), start: (t, app) => nginxRow(t, app, false) },
  { id: 'nginx-limit-conn', label: 'nginx limit_conn 20', skip: () => toolMissing('nginx'), start: (t, app) => nginxRow(t, app, true) },
  { id: 'haproxy', label: 'haproxy', skip: () => toolMissing('haproxy'), start: (t, app) => haproxyRow(t, app, false) },
  { id: 'haproxy-maxconn', label: 'haproxy maxconn 20', skip: () => toolMissing('haproxy'), start: (t, app) => haproxyRow(t, app, true) },
  { id: 'sluice-credits-off', label: 'sluice, credits off', skip: sluiceMissing, start: (t, app) => sluiceRow(t, app, false) },
  { id: 'sluice-credits-on', label: 'sluice, credits on', skip: sluiceMissing, start: (t, app) => sluiceRow(t, app, true) },
];

