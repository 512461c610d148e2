// The proxies under test in the benchmarks (bench/run.ts, bench/failover.ts, bench/overload.ts):
// sluice policy, nginx and haproxy configs, and starting each pinned and waiting until it answers. The configs
// share a base (keep-alive to the upstreams, one worker/thread, quiet logs); each bench adds its
// own upstream list and failure-handling directives.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { NODE, Proc, SLUICE_MAIN, httpGet, onPath, pinned, waitFor } from './procs.ts';

// ---------------------------------------------------------------------------------------------
// Skip reasons: undefined when the proxy can run here.

export const sluiceMissing = (): string | undefined => (existsSync(SLUICE_MAIN) ? undefined : 'dist/main.js not found: run `npm run build`');
export const toolMissing = (tool: string): string | undefined => (onPath(tool) ? undefined : `${tool} not on PATH`);

// ---------------------------------------------------------------------------------------------
// Configs

/**
 * The HTTP version sluice speaks to an upstream or the app: `auto` (its default) is the version
 * the client used, `http2` is h2c with prior knowledge. Its listeners take either.
 */
export type SluiceProtocol = 'auto' | 'http1' | 'http2';

export interface SluicePolicySpec {
  name: string;
  adminPort: number;
  graceMs: number;
  /** Outbound listener with one upstream; off when undefined. `protocol` omitted = sluice's default. */
  outbound?: { port: number; upstream: string; hosts: string[]; endpoints: string[]; protocol?: SluiceProtocol };
  /** Inbound listener in front of the app; off when undefined. `protocol` omitted = sluice's default. */
  inbound?: { port: number; appPort: number; protocol?: SluiceProtocol };
}

export function sluicePolicy(spec: SluicePolicySpec): string {
  const lines = [
    'apiVersion: sluice.dev/v1alpha1',
    'kind: SidecarPolicy',
    'metadata:',
    `  name: ${spec.name}`,
    'spec:',
    '  admin:',
    '    address: 127.0.0.1',
    `    port: ${spec.adminPort}`,
    '  shutdown:',
    `    graceMs: ${spec.graceMs}`,
    '  inbound:',
  ];
  const { inbound, outbound } = spec;
  if (inbound === undefined) {
    lines.push('    listener: off');
  } else {
    lines.push(
      '    listener:',
      '      address: 127.0.0.1',
      `      port: ${inbound.port}`,
      '    app:',
      '      address: 127.0.0.1',
      `      port: ${inbound.appPort}`,
      ...(inbound.protocol === undefined ? [] : [`      protocol: ${inbound.protocol}`]),
    );
  }
  lines.push('  outbound:');
  if (outbound === undefined) {
    lines.push('    listener: off');
  } else {
    lines.push(
      '    listener:',
      '      address: 127.0.0.1',
      `      port: ${outbound.port}`,
      '    unknownHosts: reject',
      '    upstreams:',
      `      - name: ${outbound.upstream}`,
      `        hosts: [${outbound.hosts.join(', ')}]`,
      `        endpoints: [${outbound.endpoints.join(', ')}]`,
      ...(outbound.protocol === undefined ? [] : [`        protocol: ${outbound.protocol}`]),
    );
  }
  return lines.join('\n') + '\n';
}

export interface NginxSpec {
  /** Prefix directory: pid, logs and temp paths go here. */
  dir: string;
  port: number;
  errorLogLevel: string;
  upstream: string;
  /** `server ...;` lines of the upstream block, without indentation. */
  servers: string[];
  /** Extra directives for `location /`, after the keep-alive ones. */
  location?: string[];
  /** Extra directives for the `http` block (zones), without indentation. */
  http?: string[];
  /** Default 4096: client plus upstream connections of the one worker. */
  workerConnections?: number;
  /**
   * HTTP/2 both ways: the listener takes h2c with prior knowledge (`listen ... http2`), and
   * `grpc_pass` forwards over h2c, nginx's only HTTP/2 upstream module (it serves plain HTTP/2
   * requests too). nginx opens one upstream connection per request in flight: it does not
   * multiplex streams upstream; `keepalive` keeps them for reuse.
   */
  http2?: boolean;
}

export function nginxConf(c: NginxSpec): string {
  const { dir } = c;
  const servers = c.servers.map((l) => `    ${l}\n`).join('');
  const location = (c.location ?? []).map((l) => `      ${l}\n`).join('');
  const httpExtra = (c.http ?? []).map((l) => `  ${l}\n`).join('');
  const forward = (
    c.http2 === true
      ? [`grpc_pass grpc://${c.upstream};`]
      : [`proxy_pass http://${c.upstream};`, 'proxy_http_version 1.1;', 'proxy_set_header Connection "";', 'proxy_set_header Host $host;']
  )
    .map((l) => `      ${l}\n`)
    .join('');
  return `worker_processes 1;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log ${c.errorLogLevel};
events { worker_connections ${c.workerConnections ?? 4096}; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
${httpExtra}  upstream ${c.upstream} {
${servers}    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:${c.port}${c.http2 === true ? ' http2' : ''};
    location / {
${forward}${location}    }
  }
}
`;
}

export interface HaproxySpec {
  port: number;
  timeoutServer: string;
  /** Extra `defaults` lines, without indentation. */
  defaults?: string[];
  /** `backend be` lines (balance, checks, servers), without indentation. */
  backend: string[];
  /** Global connection cap, default 4096. */
  maxconn?: number;
  /** The frontend takes h2c with prior knowledge (`proto h2`); servers need their own `proto h2`. */
  h2?: boolean;
}

export function haproxyConf(c: HaproxySpec): string {
  const indent = (ls: string[]): string => ls.map((l) => `  ${l}\n`).join('');
  return `global
  nbthread 1
  maxconn ${c.maxconn ?? 4096}
defaults
  mode http
  timeout connect 1s
  timeout client 120s
  timeout server ${c.timeoutServer}
  timeout http-keep-alive 120s
  option http-keep-alive
  http-reuse always
${indent(c.defaults ?? [])}frontend fe
  bind 127.0.0.1:${c.port}${c.h2 === true ? ' proto h2' : ''}
  default_backend be
backend be
${indent(c.backend)}`;
}

// ---------------------------------------------------------------------------------------------
// Launch: write the config, start pinned to the server core, wait until it answers.

/** Writes the config and starts nginx pinned; the caller waits until it answers (startNginx does over HTTP/1.1). */
export function launchNginx(dir: string, conf: string, serverCpu: string, nice: number | undefined): Proc {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const [cmd, args] = pinned(serverCpu, onPath('nginx') as string, ['-p', dir, '-e', `${dir}/error.log`, '-c', `${dir}/nginx.conf`], nice);
  return new Proc('nginx', cmd, args);
}

export async function startNginx(dir: string, conf: string, port: number, serverCpu: string, nice: number | undefined, host?: string): Promise<Proc> {
  const proc = launchNginx(dir, conf, serverCpu, nice);
  await waitFor('nginx', [proc], async () => (await httpGet(`http://127.0.0.1:${port}/`, 1000, host)).status === 200);
  return proc;
}

/** Writes the config and starts haproxy pinned; the caller waits until it answers (startHaproxy does over HTTP/1.1). */
export function launchHaproxy(file: string, conf: string, serverCpu: string, nice: number | undefined): Proc {
  writeFileSync(file, conf);
  const [cmd, args] = pinned(serverCpu, onPath('haproxy') as string, ['-db', '-f', file], nice);
  return new Proc('haproxy', cmd, args);
}

export async function startHaproxy(file: string, conf: string, port: number, serverCpu: string, nice: number | undefined, host?: string): Promise<Proc> {
  const proc = launchHaproxy(file, conf, serverCpu, nice);
  await waitFor('haproxy', [proc], async () => (await httpGet(`http://127.0.0.1:${port}/`, 1000, host)).status === 200);
  return proc;
}

/**
 * Writes `policy` to `file`, starts `node [flags] dist/main.js proxy --policy FILE` pinned (with
 * `env` added to this process's environment, e.g. POD_NAME), and waits for its /readyz.
 */
export async function startSluice(
  file: string,
  policy: string,
  name: string,
  adminPort: number,
  serverCpu: string,
  nice: number | undefined,
  nodeFlags: string[],
  env?: Record<string, string>,
): Promise<Proc> {
  writeFileSync(file, policy);
  const [cmd, args] = pinned(serverCpu, NODE, [...nodeFlags, SLUICE_MAIN, 'proxy', '--policy', file], nice);
  const proc = new Proc(name, cmd, args, env === undefined ? {} : { env });
  await waitFor(`${name} /readyz`, [proc], async () => (await httpGet(`http://127.0.0.1:${adminPort}/readyz`, 1000)).status === 200, 20_000);
  return proc;
}

