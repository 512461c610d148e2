// `sluice webhook`: the injection as a Kubernetes mutating admission webhook, over HTTPS with the
// certificate from a mounted Secret (re-read when the Secret is rotated). Drains on SIGTERM.
import { readFile, stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { CONTROL_ADDRESS, TOKEN_SECRET } from '../inject/annotations.ts';
import { startWebhook } from '../inject/webhook-server.ts';
import { createLogger } from '../telemetry/log.ts';
import { DEFAULT_IMAGE, settingsFrom } from './inject.ts';

export const WEBHOOK_HELP = `Usage: sluice webhook --tls-cert FILE --tls-key FILE [options]

Serves sidecar injection to the Kubernetes API server: POST /inject (AdmissionReview v1, a JSON
Patch answer for each Pod created), GET /healthz. Other kinds and operations are allowed unchanged.
Namespaces are chosen by the webhook configuration's namespaceSelector (sluice.dev/injection:
enabled); pods opt out with the annotation sluice.dev/inject: "false".

Options:
  --tls-cert FILE               PEM certificate chain (re-read when the file changes)
  --tls-key FILE                PEM private key
  --port N                      (default 15443)
  --address ADDR                (default 0.0.0.0)
  --image IMAGE                 sidecar image (default ${DEFAULT_IMAGE})
  --control HOST:PORT|off       config service for sidecars (default ${CONTROL_ADDRESS})
  --control-token-secret NAME   Secret in the pod's namespace (default ${TOKEN_SECRET})
  --legacy                      regular containers instead of native sidecars (Kubernetes < 1.29)
  --opt-in-only                 inject only pods annotated sluice.dev/inject: "true"
  --log-level LEVEL             trace|debug|info|warn|error|silent (default info)
  -h, --help                    this help`;

/** How often the certificate files are checked for a rotation. */
const CERT_CHECK_MS = 10_000;

export async function runWebhook(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      port: { type: 'string' },
      address: { type: 'string' },
      image: { type: 'string' },
      control: { type: 'string' },
      'control-token-secret': { type: 'string' },
      legacy: { type: 'boolean' },
      'opt-in-only': { type: 'boolean' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help === true) {
    console.log(WEBHOOK_HELP);
    return 0;
  }
  const certFile = values['tls-cert'];
  const keyFile = values['tls-key'];
  if (certFile === undefined || keyFile === undefined) {
    console.error(`sluice webhook: --tls-cert and --tls-key are required (the API server calls webhooks over HTTPS only)\n\n${WEBHOOK_HELP}`);
    return 2;
  }
  const port = Number(values.port ?? '15443');
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`sluice webhook: --port: must be a port from 0 to 65535, got ${JSON.stringify(values.port)}`);
    return 2;
  }
  let settings;
  try {
    settings = settingsFrom(values);
  } catch (err) {
    console.error(`sluice webhook: ${(err as Error).message}`);
    return 2;
  }
  const log = createLogger(values['log-level'] ?? process.env.SLUICE_LOG_LEVEL ?? 'info');
  const webhook = await startWebhook({
    host: values.address ?? '0.0.0.0',
    port,
    cert: await readFile(certFile),
    key: await readFile(keyFile),
    workload: { settings, requireOptIn: values['opt-in-only'] === true },
    log,
  });
  log.info({ image: settings.image, control: settings.control, legacy: settings.legacy, port: webhook.address.port }, 'sluice webhook started');

  // A Secret volume is updated by swapping a symlink: the files' mtimes change together.
  const mtimes = async (): Promise<string> => (await Promise.all([stat(certFile), stat(keyFile)])).map((s) => s.mtimeMs).join();
  let seen = await mtimes();
  const timer = setInterval(() => {
    void (async () => {
      const now = await mtimes();
      if (now === seen) return;
      webhook.setCertificate(await readFile(certFile), await readFile(keyFile));
      seen = now;
      log.info('TLS certificate reloaded');
    })().catch((err: unknown) => log.error({ err: (err as Error).message }, 'TLS certificate reload failed; the previous one keeps serving'));
  }, CERT_CHECK_MS);
  timer.unref();

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) {
        resolve(1);
        return;
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      clearInterval(timer);
      void webhook.close().then(() => resolve(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}
