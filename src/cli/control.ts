// `sluice control`: the config service. Follows a git repository of policy files and pushes each
// sidecar its policy; serves the fleet API. SIGTERM stops it (sidecars keep serving and reconnect
// to another replica).
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_TRACE_LIMITS } from '../control/traces/store.ts';
import { startControl } from '../control/server.ts';
import { createLogger } from '../telemetry/log.ts';

export const CONTROL_HELP = `Usage: sluice control --repo URL|PATH [options]

Follows a git repository of SidecarPolicy files, validates every commit as a whole, and pushes
each connected sidecar its policy over gRPC. An invalid commit is refused: the last good commit
keeps being served, and the fleet API, logs and metrics name the bad commit and its errors.

Options:
  --repo URL|PATH        policy repository (https, ssh, file:// or a local path)   (env SLUICE_CONTROL_REPO)
  --branch NAME          branch to follow (default main)                        (env SLUICE_CONTROL_BRANCH)
  --subdir PATH          only policy files under this directory of the repository
  --work-dir DIR         where the repository mirror lives (default: a folder in the temp dir)
  --poll-ms N            fetch interval (default 15000); POST /v1/refresh fetches at once (webhooks)
  --grpc-address A       gRPC listen address (default 0.0.0.0)
  --grpc-port N          gRPC port sidecars connect to (default 15012)
  --api-address A        HTTP API address (default 0.0.0.0)
  --api-port N           HTTP API port: /v1/fleet /v1/refresh /v1/traces /healthz /readyz /metrics,
                         and the status page at / (default 15014)
  --traces-forward URL   forward every OTLP trace export received to this collector's OTLP/HTTP
                         traces URL, unchanged                                   (env SLUICE_TRACES_FORWARD)
  --traces-kept N        recent traces kept in memory (default 500; failed ones: N/5 more, apart)
  --token-file FILE      bearer token sidecars and API callers must send            (env SLUICE_CONTROL_TOKEN_FILE)
  --tls-cert FILE, --tls-key FILE   serve gRPC over TLS
  --tls-client-ca FILE   require client certificates signed by this CA (mTLS)
  --max-sidecars N       streams this replica serves at most (default 10000)
  --log-level LEVEL      trace|debug|info|warn|error|silent (default info)
  -h, --help             this help`;

function int(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name}: must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  return n;
}

/** A secret from a file, trimmed; an empty file is a mistake, not "no token". */
export async function readToken(path: string | undefined, what: string): Promise<string | undefined> {
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`${what} ${path}: ${(err as Error).message}`);
  }
  const token = text.trim();
  if (token === '') throw new Error(`${what} ${path}: the file is empty`);
  return token;
}

export async function runControl(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      repo: { type: 'string' },
      branch: { type: 'string' },
      subdir: { type: 'string' },
      'work-dir': { type: 'string' },
      'poll-ms': { type: 'string' },
      'grpc-address': { type: 'string' },
      'grpc-port': { type: 'string' },
      'api-address': { type: 'string' },
      'api-port': { type: 'string' },
      'token-file': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-client-ca': { type: 'string' },
      'max-sidecars': { type: 'string' },
      'traces-forward': { type: 'string' },
      'traces-kept': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    console.log(CONTROL_HELP);
    return 0;
  }
  const env = process.env;
  const repo = values.repo ?? env.SLUICE_CONTROL_REPO;
  if (repo === undefined || repo === '') {
    console.error(`sluice control: --repo is required\n\n${CONTROL_HELP}`);
    return 2;
  }
  if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) {
    console.error('sluice control: --tls-cert and --tls-key go together');
    return 2;
  }
  const log = createLogger(values['log-level'] ?? env.SLUICE_LOG_LEVEL ?? 'info');
  const token = await readToken(values['token-file'] ?? env.SLUICE_CONTROL_TOKEN_FILE, '--token-file');
  const tls =
    values['tls-cert'] === undefined
      ? undefined
      : {
          cert: await readFile(values['tls-cert']),
          key: await readFile(values['tls-key'] as string),
          clientCa: values['tls-client-ca'] === undefined ? undefined : await readFile(values['tls-client-ca']),
        };
  if (token === undefined) log.warn('no --token-file: any peer that reaches the gRPC port gets policies');
  const forwardUrl = values['traces-forward'] ?? env.SLUICE_TRACES_FORWARD;
  if (forwardUrl !== undefined && !isHttpUrl(forwardUrl)) {
    console.error(`sluice control: --traces-forward must be an http(s) URL of an OTLP/HTTP traces endpoint, got ${JSON.stringify(forwardUrl)}`);
    return 2;
  }
  const kept = int('--traces-kept', values['traces-kept'], DEFAULT_TRACE_LIMITS.maxTraces, 1, 100_000);
  const service = await startControl({
    repo,
    branch: values.branch ?? env.SLUICE_CONTROL_BRANCH ?? 'main',
    subdir: values.subdir,
    workDir: values['work-dir'] ?? join(tmpdir(), `sluice-control-${process.pid}`),
    pollMs: int('--poll-ms', values['poll-ms'], 15_000, 100, 3_600_000),
    debounceMs: 200,
    gitTimeoutMs: 30_000,
    grpc: { host: values['grpc-address'] ?? '0.0.0.0', port: int('--grpc-port', values['grpc-port'], 15012, 0, 65535) },
    api: { host: values['api-address'] ?? '0.0.0.0', port: int('--api-port', values['api-port'], 15014, 0, 65535) },
    token,
    tls,
    maxSidecars: int('--max-sidecars', values['max-sidecars'], 10_000, 1, 1_000_000),
    log,
    traces: { forwardUrl, limits: { ...DEFAULT_TRACE_LIMITS, maxTraces: kept, maxErrored: Math.max(1, Math.ceil(kept / 5)) } },
  });
  // For whoever started us on port 0 (tests, the bench): the ports actually bound.
  console.log(JSON.stringify({ grpcPort: service.grpcPort, apiPort: service.apiPort }));
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return resolve(1);
      stopping = true;
      log.info({ signal }, 'sluice control stopping');
      void service.close().then(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

/** A URL undici will send to: parsed (a port past 65535 is not), http or https. */
function isHttpUrl(text: string): boolean {
  const u = URL.parse(text);
  return u !== null && (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
}
