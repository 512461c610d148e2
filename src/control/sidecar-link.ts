// A running sidecar tied to the config service: each pushed policy is parsed with the same parser
// the service used, checked against what this sidecar can change without a restart, applied
// atomically (requests in flight finish on the policy they started with; budgets, breakers and
// pools carry over where their settings are unchanged), persisted, and ACKed. Anything else is
// NACKed with the reason, and the old policy keeps serving.
import type { Logger } from 'pino';
import { formatPolicyError, parsePolicy } from '../policy/parse.ts';
import type { ListenerAddress, SidecarPolicy } from '../policy/types.ts';
import type { Sidecar } from '../proxy/sidecar.ts';
import { counter, gauge } from '../telemetry/registry.ts';
import { ControlClient, type ApplyResult, type ControlClientOptions } from './client.ts';
import { healthReader } from './health.ts';
import type { PolicyUpdate } from './protocol.ts';
import { savePolicy } from './state-dir.ts';

export interface LinkOptions {
  readonly sidecar: Sidecar;
  /** Command-line and environment overrides, applied to every pushed policy as to the file. */
  readonly overrides: (policy: SidecarPolicy) => SidecarPolicy;
  /** What the sidecar started on: a persisted push, or '' for its own file. */
  readonly initial: { readonly version: string; readonly commit: string };
  readonly stateDir: string | undefined;
  readonly client: Pick<ControlClientOptions, 'targets' | 'identity' | 'token' | 'tls' | 'heartbeatMs' | 'backoff' | 'random'>;
  readonly log: Logger;
  /** Told after each applied update (the CLI's readiness gate waits for the first). */
  readonly onApplied?: () => void;
  readonly draining: () => boolean;
}

export interface ControlLink {
  readonly client: ControlClient;
  applied(): { readonly version: string; readonly commit: string };
  close(): Promise<void>;
}

function sameAddress(a: ListenerAddress | undefined, b: ListenerAddress | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.host === b.host && a.port === b.port);
}

/** What a policy may not change on a running sidecar: the sockets it listens on. */
export function restartOnlyChanges(running: SidecarPolicy, next: SidecarPolicy): string[] {
  const out: string[] = [];
  const show = (l: ListenerAddress | undefined): string => (l === undefined ? 'off' : `${l.host}:${l.port}`);
  const check = (field: string, a: ListenerAddress | undefined, b: ListenerAddress | undefined): void => {
    if (!sameAddress(a, b)) out.push(`spec.${field}: listeners change only on restart (running ${show(a)}, policy ${show(b)})`);
  };
  check('admin', running.admin, next.admin);
  check('outbound.listener', running.outbound.listener, next.outbound.listener);
  check('inbound.listener', running.inbound.listener, next.inbound.listener);
  return out;
}

export function linkToControl(o: LinkOptions): ControlLink {
  const { sidecar, log } = o;
  const registry = sidecar.metrics;
  const connected = gauge(registry, 'sluice_control_connected', '1 while the stream to the config service is open.', []);
  const updates = counter(registry, 'sluice_control_updates_total', 'Policy updates from the config service, by result: applied, rejected (NACKed; the old policy keeps serving).', ['result']);
  const version = gauge(registry, 'sluice_control_policy_version_info', 'The pushed policy in effect (value 1), by version and commit; absent while on the bundled policy.', ['version', 'commit']);
  let applied = o.initial;
  if (applied.version !== '') version.labels({ version: applied.version, commit: applied.commit }).set(1);

  async function apply(update: PolicyUpdate): Promise<ApplyResult> {
    if (update.version === applied.version) {
      // The service confirms what runs (its first answer on a new stream): nothing to reload.
      applied = { version: update.version, commit: update.commit };
      o.onApplied?.();
      return { ok: true };
    }
    const source = `${update.file}@${update.commit.slice(0, 12)}`;
    const parsed = parsePolicy(update.policyYaml, source);
    if (!parsed.ok) {
      updates.labels({ result: 'rejected' }).inc();
      return { ok: false, message: `${source}: policy rejected by the sidecar`, errors: parsed.errors.map(formatPolicyError) };
    }
    const next = o.overrides(parsed.policy);
    const blocked = restartOnlyChanges(sidecar.policy(), next);
    if (blocked.length > 0) {
      updates.labels({ result: 'rejected' }).inc();
      return { ok: false, message: `${source}: needs a restart to apply`, errors: blocked.map((b) => `${source}: ${b}`) };
    }
    sidecar.applyPolicy(next);
    version.reset();
    version.labels({ version: update.version, commit: update.commit }).set(1);
    applied = { version: update.version, commit: update.commit };
    updates.labels({ result: 'applied' }).inc();
    log.info({ version: update.version, commit: update.commit, file: update.file }, 'policy from the config service applied');
    if (o.stateDir !== undefined) {
      // Serving already; a failed save costs only the restart-during-outage case, so it is logged, not NACKed.
      await savePolicy(o.stateDir, { version: update.version, commit: update.commit, file: update.file, yaml: update.policyYaml }).catch((err: unknown) =>
        log.error({ err, dir: o.stateDir }, 'could not persist the applied policy'),
      );
    }
    o.onApplied?.();
    return { ok: true };
  }

  const client = new ControlClient({
    ...o.client,
    log,
    applied: () => applied,
    apply,
    health: healthReader(registry, () => (o.draining() ? 'draining' : 'ready')),
    onConnected: (up) => connected.set(up ? 1 : 0),
  });
  connected.set(0);
  client.start();
  return {
    client,
    applied: () => applied,
    close: () => client.close(),
  };
}
