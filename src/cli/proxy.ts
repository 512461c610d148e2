// `sluice proxy`: run the sidecar on a policy file, reload it on change, drain on SIGTERM.
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { linkToControl } from '../control/sidecar-link.ts';
import { loadPersisted } from '../control/state-dir.ts';
import { readToken } from './control.ts';
import { SLUICE_VERSION } from './version.ts';
import { DEFAULT_POLICY_PATH, loadPolicyFile } from '../policy/load.ts';
import { formatPolicyError } from '../policy/parse.ts';
import type { ListenerAddress, SidecarPolicy } from '../policy/types.ts';
import { watchPolicyFile } from '../policy/watch.ts';
import { declarePolicyMetrics, startSidecar } from '../proxy/sidecar.ts';
import { createLogger } from '../telemetry/log.ts';
import { setUpTracing } from '../telemetry/otel.ts';

export const PROXY_HELP = `Usage: sluice proxy [options]

Runs the sidecar: outbound listener (producer traffic), inbound listener (consumer traffic),
admin listener (/healthz /readyz /config /metrics /shutdown).

Options:
  --policy FILE         policy file (default: the embedded ${'config/sluice.yaml'}); reloaded on change
  --outbound-port N     override spec.outbound.listener.port        (env SLUICE_OUTBOUND_PORT)
  --inbound-port N      override spec.inbound.listener.port         (env SLUICE_INBOUND_PORT)
  --admin-port N        override spec.admin.port                    (env SLUICE_ADMIN_PORT)
  --admin-address ADDR  override spec.admin.address, an IP          (env SLUICE_ADMIN_ADDRESS)
  --app-port N          override spec.inbound.app.port              (env SLUICE_APP_PORT)
  --log-level LEVEL     trace|debug|info|warn|error|silent          (env SLUICE_LOG_LEVEL, default info)

Following a config service (sluice control) instead of the file:
  --control HOST:PORT[,HOST:PORT...]  replicas to connect to                (env SLUICE_CONTROL)
  --control-token-file FILE  bearer token for the stream                   (env SLUICE_CONTROL_TOKEN_FILE)
  --control-ca FILE     TLS to the service, trusting this CA; with --control-cert/--control-key: mTLS
  --state-dir DIR       keep the last good pushed policy here; start from it when the service is
                        unreachable (else from --policy / the embedded default) (env SLUICE_STATE_DIR)
  --wait-for-policy     not ready (/readyz 503) until the first push is applied
  --service NAME        this sidecar's service, for policy selectors          (env SLUICE_SERVICE)
  --labels K=V,...      this pod's labels, for policy selectors               (env SLUICE_LABELS)
  --labels-file FILE    labels in the Downward API format (key="value" lines) (env SLUICE_LABELS_FILE)
  --sidecar-id ID       this sidecar's id in the fleet (env POD_NAME; default host name and pid)
  -h, --help            this help

Tracing (OpenTelemetry, off unless an exporter or endpoint is set): OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (e.g. http://sluice-control:15014/v1/traces),
OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_TRACES_EXPORTER, OTEL_TRACES_SAMPLER
(default parentbased_always_on) and OTEL_TRACES_SAMPLER_ARG, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_PROPAGATORS; OTEL_SDK_DISABLED=true turns it off.
  --traces-token-file FILE  send this bearer token with every trace export (the config service's
                        receiver wants the control token)            (env SLUICE_TRACES_TOKEN_FILE)

Signals: SIGTERM/SIGINT drain (readiness fails, listeners stop accepting, in-flight requests get
spec.shutdown.graceMs to finish) and exit 0; a second signal exits at once.`;

interface Overrides {
  outboundPort?: number;
  inboundPort?: number;
  adminPort?: number;
  adminAddress?: string;
  appPort?: number;
}

function port(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name}: must be a port from 0 to 65535, got ${JSON.stringify(value)}`);
  return n;
}

function ipAddress(name: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (isIP(value) === 0) throw new Error(`${name}: must be an IP address (127.0.0.1, 0.0.0.0, ::), got ${JSON.stringify(value)}`);
  return value;
}

function withPort(l: ListenerAddress | undefined, p: number | undefined): ListenerAddress | undefined {
  return l === undefined || p === undefined ? l : { ...l, port: p };
}

/** Command-line and environment settings win over the file: they come from the pod spec. */
export function applyOverrides(policy: SidecarPolicy, o: Overrides): SidecarPolicy {
  return {
    ...policy,
    admin: { ...(withPort(policy.admin, o.adminPort) as ListenerAddress), ...(o.adminAddress === undefined ? {} : { host: o.adminAddress }) },
    outbound: { ...policy.outbound, listener: withPort(policy.outbound.listener, o.outboundPort) },
    inbound: {
      ...policy.inbound,
      listener: withPort(policy.inbound.listener, o.inboundPort),
      app: o.appPort === undefined ? policy.inbound.app : { ...policy.inbound.app, port: o.appPort },
    },
  };
}

/** `k=v,k2=v2`, or Downward API lines `k="v"`; later entries win. */
export function parseLabels(text: string, lines: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(lines ? /\r?\n/ : ',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Error(`labels: ${JSON.stringify(item)} is not key=value`);
    let value = item.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = JSON.parse(value) as string;
    out[item.slice(0, eq).trim()] = value;
  }
  return out;
}

export async function runProxy(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      policy: { type: 'string' },
      'outbound-port': { type: 'string' },
      'inbound-port': { type: 'string' },
      'admin-port': { type: 'string' },
      'admin-address': { type: 'string' },
      'app-port': { type: 'string' },
      'log-level': { type: 'string' },
      control: { type: 'string' },
      'control-token-file': { type: 'string' },
      'traces-token-file': { type: 'string' },
      'control-ca': { type: 'string' },
      'control-cert': { type: 'string' },
      'control-key': { type: 'string' },
      'state-dir': { type: 'string' },
      'wait-for-policy': { type: 'boolean' },
      service: { type: 'string' },
      labels: { type: 'string' },
      'labels-file': { type: 'string' },
      'sidecar-id': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    console.log(PROXY_HELP);
    return 0;
  }
  const env = process.env;
  const overrides: Overrides = {
    outboundPort: port('--outbound-port', values['outbound-port'] ?? env.SLUICE_OUTBOUND_PORT),
    inboundPort: port('--inbound-port', values['inbound-port'] ?? env.SLUICE_INBOUND_PORT),
    adminPort: port('--admin-port', values['admin-port'] ?? env.SLUICE_ADMIN_PORT),
    adminAddress: ipAddress('--admin-address', values['admin-address'] ?? env.SLUICE_ADMIN_ADDRESS),
    appPort: port('--app-port', values['app-port'] ?? env.SLUICE_APP_PORT),
  };
  const log = createLogger(values['log-level'] ?? env.SLUICE_LOG_LEVEL ?? 'info');
  const path = values.policy ?? env.SLUICE_POLICY ?? DEFAULT_POLICY_PATH;
  const control = values.control ?? env.SLUICE_CONTROL;
  const stateDir = values['state-dir'] ?? env.SLUICE_STATE_DIR;

  // With a config service, the last policy it pushed (persisted) wins over the file: it is newer.
  let initial = { version: '', commit: '' };
  let startPolicy: SidecarPolicy | undefined;
  if (control !== undefined && stateDir !== undefined) {
    const persisted = await loadPersisted(stateDir);
    if (typeof persisted === 'string') log.info({ stateDir, reason: persisted }, 'starting from the policy file');
    else {
      startPolicy = persisted.policy;
      initial = { version: persisted.version, commit: persisted.commit };
      log.info({ stateDir, version: persisted.version, commit: persisted.commit }, 'starting from the last policy the config service pushed');
    }
  }
  if (startPolicy === undefined) {
    const loaded = await loadPolicyFile(path);
    if (!loaded.ok) {
      for (const e of loaded.errors) console.error(formatPolicyError(e));
      console.error(`sluice: ${path}: policy rejected, not starting`);
      return 1;
    }
    startPolicy = loaded.policy;
  }

  // As the proto says: stable per pod; two sidecars on one host (no POD_NAME) differ by pid.
  const sidecarId = values['sidecar-id'] ?? env.POD_NAME ?? `${hostname()}-${process.pid}`;
  const tracesToken = await readToken(values['traces-token-file'] ?? env.SLUICE_TRACES_TOKEN_FILE, '--traces-token-file');
  const tracing = await setUpTracing(env, { sidecarId, version: SLUICE_VERSION, token: tracesToken }, log);
  let stopping: Promise<void> | undefined;
  let waitingForPush = control !== undefined && values['wait-for-policy'] === true;
  const sidecar = await startSidecar({
    policy: applyOverrides(startPolicy, overrides),
    log,
    processMetrics: true,
    tracing: tracing.tracing,
    onShutdownRequest: () => void stop('admin /shutdown'),
    notReady: () => (waitingForPush ? ['waiting for the first policy from the config service'] : []),
  });
  const withOverrides = (p: SidecarPolicy): SidecarPolicy => applyOverrides(p, overrides);

  let closeSource: () => Promise<void>;
  if (control !== undefined) {
    const labels = {
      ...parseLabels(values.labels ?? env.SLUICE_LABELS ?? '', false),
      ...(values['labels-file'] ?? env.SLUICE_LABELS_FILE ? parseLabels(await readFile((values['labels-file'] ?? env.SLUICE_LABELS_FILE) as string, 'utf8'), true) : {}),
    };
    const ca = values['control-ca'];
    const link = linkToControl({
      sidecar,
      overrides: withOverrides,
      initial,
      stateDir,
      log,
      draining: () => stopping !== undefined,
      onApplied: () => {
        waitingForPush = false;
      },
      client: {
        targets: control.split(',').map((t) => t.trim()).filter((t) => t !== ''),
        identity: {
          sidecarId,
          service: values.service ?? env.SLUICE_SERVICE ?? '',
          labels,
          sluiceVersion: SLUICE_VERSION,
        },
        token: await readToken(values['control-token-file'] ?? env.SLUICE_CONTROL_TOKEN_FILE, '--control-token-file'),
        tls:
          ca === undefined
            ? undefined
            : {
                ca: await readFile(ca),
                cert: values['control-cert'] === undefined ? undefined : await readFile(values['control-cert']),
                key: values['control-key'] === undefined ? undefined : await readFile(values['control-key']),
              },
        heartbeatMs: 5000,
        backoff: { baseMs: 250, capMs: 10_000 },
      },
    });
    closeSource = () => link.close();
    log.info({ control, ...sidecar.addresses }, 'sluice proxy started');
  } else {
    const reloads = declarePolicyMetrics(sidecar.metrics).reloads;
    // The watcher reports what it finds at start too, so an edit between our load and its first
    // read is not missed; a policy identical to the one serving is not re-applied.
    let serving = JSON.stringify(startPolicy);
    const watcher = watchPolicyFile(path, {
      emitInitial: true,
      onPolicy: (policy) => {
        const next = JSON.stringify(policy);
        if (next === serving) return;
        serving = next;
        sidecar.applyPolicy(withOverrides(policy));
      },
      onInvalid: (errors) => {
        reloads.labels({ result: 'rejected' }).inc();
        log.error({ path, errors: errors.map(formatPolicyError) }, 'policy change rejected; the previous policy keeps serving');
      },
    });
    await watcher.ready;
    closeSource = async () => watcher.close();
    log.info({ policy: path, ...sidecar.addresses }, 'sluice proxy started');
  }

  let exitOnAdminShutdown: () => void = () => undefined;
  const exited = new Promise<number>((resolve) => {
    const onSignal = (signal: string): void => {
      if (stopping !== undefined) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(1);
        return;
      }
      void stop(signal).then(() => resolve(0));
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
    exitOnAdminShutdown = () => resolve(0);
  });

  function stop(reason: string): Promise<void> {
    stopping ??= (async () => {
      log.info({ reason }, 'shutting down');
      await closeSource();
      await sidecar.shutdown();
      await tracing.shutdown();
      exitOnAdminShutdown();
    })();
    return stopping;
  }

  return exited;
}
