// `sluice proxy`: run the sidecar on a policy file, reload it on change, drain on SIGTERM.
import { parseArgs } from 'node:util';
import { DEFAULT_POLICY_PATH, loadPolicyFile } from '../policy/load.ts';
import { formatPolicyError } from '../policy/parse.ts';
import type { ListenerAddress, SidecarPolicy } from '../policy/types.ts';
import { watchPolicyFile } from '../policy/watch.ts';
import { declarePolicyMetrics, startSidecar } from '../proxy/sidecar.ts';
import { createLogger } from '../telemetry/log.ts';

export const PROXY_HELP = `Usage: sluice proxy [options]

Runs the sidecar: outbound listener (producer traffic), inbound listener (consumer traffic),
admin listener (/healthz /readyz /config /metrics /shutdown).

Options:
  --policy FILE         policy file (default: the embedded ${'config/sluice.yaml'}); reloaded on change
  --outbound-port N     override spec.outbound.listener.port        (env SLUICE_OUTBOUND_PORT)
  --inbound-port N      override spec.inbound.listener.port         (env SLUICE_INBOUND_PORT)
  --admin-port N        override spec.admin.port                    (env SLUICE_ADMIN_PORT)
  --app-port N          override spec.inbound.app.port              (env SLUICE_APP_PORT)
  --log-level LEVEL     trace|debug|info|warn|error|silent          (env SLUICE_LOG_LEVEL, default info)
  -h, --help            this help

Signals: SIGTERM/SIGINT drain (readiness fails, listeners stop accepting, in-flight requests get
spec.shutdown.graceMs to finish) and exit 0; a second signal exits at once.`;

interface Overrides {
  outboundPort?: number;
  inboundPort?: number;
  adminPort?: number;
  appPort?: number;
}

function port(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name}: must be a port from 0 to 65535, got ${JSON.stringify(value)}`);
  return n;
}

function withPort(l: ListenerAddress | undefined, p: number | undefined): ListenerAddress | undefined {
  return l === undefined || p === undefined ? l : { ...l, port: p };
}

/** Command-line and environment settings win over the file: they come from the pod spec. */
export function applyOverrides(policy: SidecarPolicy, o: Overrides): SidecarPolicy {
  return {
    ...policy,
    admin: withPort(policy.admin, o.adminPort) as ListenerAddress,
    outbound: { ...policy.outbound, listener: withPort(policy.outbound.listener, o.outboundPort) },
    inbound: {
      ...policy.inbound,
      listener: withPort(policy.inbound.listener, o.inboundPort),
      app: o.appPort === undefined ? policy.inbound.app : { ...policy.inbound.app, port: o.appPort },
    },
  };
}

export async function runProxy(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      policy: { type: 'string' },
      'outbound-port': { type: 'string' },
      'inbound-port': { type: 'string' },
      'admin-port': { type: 'string' },
      'app-port': { type: 'string' },
      'log-level': { type: 'string' },
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
    appPort: port('--app-port', values['app-port'] ?? env.SLUICE_APP_PORT),
  };
  const log = createLogger(values['log-level'] ?? env.SLUICE_LOG_LEVEL ?? 'info');
  const path = values.policy ?? env.SLUICE_POLICY ?? DEFAULT_POLICY_PATH;

  const loaded = await loadPolicyFile(path);
  if (!loaded.ok) {
    for (const e of loaded.errors) console.error(formatPolicyError(e));
    console.error(`sluice: ${path}: policy rejected, not starting`);
    return 1;
  }

  let stopping: Promise<void> | undefined;
  const sidecar = await startSidecar({
    policy: applyOverrides(loaded.policy, overrides),
    log,
    processMetrics: true,
    onShutdownRequest: () => void stop('admin /shutdown'),
  });
  const reloads = declarePolicyMetrics(sidecar.metrics).reloads;
  // The watcher reports what it finds at start too, so an edit between our load and its first
  // read is not missed; a policy identical to the one serving is not re-applied.
  let serving = JSON.stringify(loaded.policy);
  const watcher = watchPolicyFile(path, {
    emitInitial: true,
    onPolicy: (policy) => {
      const next = JSON.stringify(policy);
      if (next === serving) return;
      serving = next;
      sidecar.applyPolicy(applyOverrides(policy, overrides));
    },
    onInvalid: (errors) => {
      reloads.labels({ result: 'rejected' }).inc();
      log.error({ path, errors: errors.map(formatPolicyError) }, 'policy change rejected; the previous policy keeps serving');
    },
  });
  await watcher.ready;
  log.info({ policy: path, ...sidecar.addresses }, 'sluice proxy started');

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
      watcher.close();
      await sidecar.shutdown();
      exitOnAdminShutdown();
    })();
    return stopping;
  }

  return exited;
}
