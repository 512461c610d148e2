// Injection into one pod template (metadata + spec): the sidecar, the app containers' proxy
// variables, the volumes, the grace period and the record. Pure: a copy in, a copy out.
import { ANNOTATION, readBoolean, sidecarOptions, type Annotations, type InjectSettings, type SidecarOptions } from './annotations.ts';
import { InjectError } from './errors.ts';
import { INBOUND_PORT_NAME, proxyEnv, SIDECAR_NAME, sidecarContainer, sidecarVolumes } from './sidecar.ts';

type Json = Record<string, unknown>;

/** The embedded policy's shutdown.graceMs (20 s) and a margin for the app's own stop before it. */
export const MIN_GRACE_SECONDS = 25;

export interface PodTemplate {
  readonly metadata: Json;
  readonly spec: Json;
}

export type PodOutcome =
  | { readonly kind: 'injected'; readonly template: PodTemplate; readonly options: SidecarOptions; readonly notes: readonly string[] }
  /** Left as it is; `warn` when the user probably expected a sidecar. */
  | { readonly kind: 'skipped'; readonly reason: string; readonly warn: boolean };

export interface PodContext {
  /** The workload's annotations overlaid with the pod template's (the template wins). */
  readonly annotations: Annotations;
  readonly settings: InjectSettings;
  readonly service: string;
  /** Only pods annotated `sluice.dev/inject: "true"` (a webhook that selects namespaces broadly). */
  readonly requireOptIn?: boolean;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function containerList(spec: Json, field: 'containers' | 'initContainers'): Json[] {
  const list = spec[field];
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list) || !list.every((c) => isObject(c) && typeof c.name === 'string')) {
    throw new InjectError('bad-workload', `spec.${field} must be a list of containers, each with a name`);
  }
  return list as Json[];
}

function portsOf(c: Json): { name?: string; containerPort: number }[] {
  return Array.isArray(c.ports) ? (c.ports as unknown[]).filter((p): p is { name?: string; containerPort: number } => isObject(p) && typeof p.containerPort === 'number') : [];
}

function withProxyEnv(c: Json, o: SidecarOptions): Json {
  const env = Array.isArray(c.env) ? (c.env as unknown[]) : [];
  // A variable the container sets itself (a corporate proxy, an opt-out) is the user's choice, in
  // either spelling: curl reads http_proxy, the JVM HTTP_PROXY, and half an override would split
  // the app's traffic between two proxies.
  const defined = new Set(env.filter(isObject).map((e) => String(e.name).toLowerCase()));
  const added = proxyEnv(o).filter((e) => !defined.has(String(e.name).toLowerCase()));
  return added.length === 0 ? c : { ...c, env: [...env, ...added] };
}

export function injectPod(input: { metadata?: unknown; spec?: unknown }, ctx: PodContext): PodOutcome {
  const a = ctx.annotations;
  const injected = a[ANNOTATION.injected];
  if (injected !== undefined) return { kind: 'skipped', reason: `already injected (${ANNOTATION.injected}: ${injected})`, warn: false };
  const want = readBoolean(a, ANNOTATION.inject);
  if (want === false) return { kind: 'skipped', reason: `opted out (${ANNOTATION.inject}: "false")`, warn: false };
  if (want === undefined && ctx.requireOptIn === true) return { kind: 'skipped', reason: `not opted in (${ANNOTATION.inject}: "true")`, warn: false };

  if (!isObject(input.spec)) throw new InjectError('bad-workload', 'no pod spec');
  const spec = input.spec;
  const containers = containerList(spec, 'containers');
  const inits = containerList(spec, 'initContainers');
  if (containers.length === 0) throw new InjectError('bad-workload', 'spec.containers is empty');
  if ([...containers, ...inits].some((c) => c.name === SIDECAR_NAME)) {
    return { kind: 'skipped', reason: `it already has a container named ${SIDECAR_NAME} (injected by hand?)`, warn: true };
  }
  if (spec.hostNetwork === true) {
    return { kind: 'skipped', reason: "hostNetwork: true: the sidecar's ports would be the node's, and its loopback every pod's on the node", warn: true };
  }

  const appPorts = containers.flatMap(portsOf);
  const options = sidecarOptions(
    a,
    ctx.settings,
    {
      first: containers[0] === undefined ? undefined : portsOf(containers[0])[0]?.containerPort,
      byName: (name) => appPorts.find((p) => p.name === name)?.containerPort,
    },
    ctx.service,
  );
  const restart = spec.restartPolicy;
  if (options.legacy && (restart === 'Never' || restart === 'OnFailure')) {
    return {
      kind: 'skipped',
      reason: `restartPolicy ${String(restart)} with ${ANNOTATION.legacy}: a sidecar in a regular container never exits, so the pod would never complete; use a native sidecar (Kubernetes 1.29+)`,
      warn: true,
    };
  }
  const own = new Map<number, string>([
    [options.ports.inbound, 'inbound'],
    [options.ports.outbound, 'outbound'],
    [options.ports.admin, 'admin'],
  ]);
  for (const c of [...inits, ...containers]) {
    for (const p of portsOf(c)) {
      const clash = own.get(p.containerPort);
      if (clash !== undefined) {
        throw new InjectError('port-conflict', `container ${String(c.name)} uses port ${p.containerPort}, the sidecar's ${clash} port: set ${ANNOTATION[`${clash}Port` as 'inboundPort']} to another`);
      }
    }
  }
  const volumes = Array.isArray(spec.volumes) ? (spec.volumes as unknown[]) : [];
  const added = sidecarVolumes(options);
  for (const v of added) {
    if (volumes.some((x) => isObject(x) && x.name === v.name)) throw new InjectError('name-conflict', `the pod already has a volume named ${String(v.name)}`);
  }

  const sidecar = sidecarContainer(options);
  const out: Json = { ...spec };
  if (options.legacy) {
    // First in the list: the kubelet starts containers in order, each after the one before's postStart hook.
    out.containers = [sidecar, ...containers.map((c) => withProxyEnv(c, options))];
  } else {
    // First of the init containers: the others start after it is up, and may call out through it.
    out.containers = containers.map((c) => withProxyEnv(c, options));
    out.initContainers = [sidecar, ...inits.map((c) => withProxyEnv(c, options))];
  }
  if (added.length > 0) out.volumes = [...volumes, ...added];
  const grace = spec.terminationGracePeriodSeconds;
  if (typeof grace === 'number' && grace < MIN_GRACE_SECONDS) out.terminationGracePeriodSeconds = MIN_GRACE_SECONDS;

  const metadata: Json = isObject(input.metadata) ? { ...input.metadata } : {};
  metadata.annotations = { ...(isObject(metadata.annotations) ? metadata.annotations : {}), [ANNOTATION.injected]: options.image };

  const notes: string[] = [];
  if (options.appPort === undefined) notes.push(`no app port (no containerPort, or ${ANNOTATION.appPort}: "none"): outbound only, no ${INBOUND_PORT_NAME} port`);
  if (typeof grace === 'number' && grace < MIN_GRACE_SECONDS) notes.push(`terminationGracePeriodSeconds raised from ${grace} to ${MIN_GRACE_SECONDS}, so the sidecar can drain`);
  return { kind: 'injected', template: { metadata, spec: out }, options, notes };
}
