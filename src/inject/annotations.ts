// What a workload's annotations ask of injection, parsed once into frozen options. Every
// `sluice.dev/` annotation is checked: an unknown one (a typo) or a bad value is an InjectError
// naming the annotation, the value and what would be accepted, as policy files are checked.
import { InjectError } from './errors.ts';
import { sidecarResources, type SidecarResources } from './resources.ts';

export const ANNOTATION = Object.freeze({
  inject: 'sluice.dev/inject',
  injected: 'sluice.dev/injected',
  appPort: 'sluice.dev/app-port',
  inboundPort: 'sluice.dev/inbound-port',
  outboundPort: 'sluice.dev/outbound-port',
  adminPort: 'sluice.dev/admin-port',
  adminAddress: 'sluice.dev/admin-address',
  control: 'sluice.dev/control',
  controlTokenSecret: 'sluice.dev/control-token-secret',
  policyConfigMap: 'sluice.dev/policy-configmap',
  legacy: 'sluice.dev/legacy',
  cpu: 'sluice.dev/cpu',
  memory: 'sluice.dev/memory',
  traces: 'sluice.dev/traces',
  traceSampling: 'sluice.dev/trace-sampling',
});

const KNOWN: ReadonlySet<string> = new Set(Object.values(ANNOTATION));

/** Where the sidecar's policy comes from. */
export type PolicySource =
  | { readonly kind: 'control'; readonly address: string; readonly tokenSecret: string }
  | { readonly kind: 'configmap'; readonly name: string }
  | { readonly kind: 'bundled' };

/** Defaults for every workload, from the command line (`sluice inject`, `sluice webhook`). */
export interface InjectSettings {
  /** The sidecar image. */
  readonly image: string;
  /** The config service's address, or 'off' to run every sidecar on its bundled policy. */
  readonly control: string;
  /** The Secret holding the control token, in the workload's namespace. */
  readonly tokenSecret: string;
  /** A regular container instead of a native sidecar (clusters before Kubernetes 1.29). */
  readonly legacy: boolean;
}

export const CONTROL_ADDRESS = 'sluice-control.sluice-system.svc:15012';
export const TOKEN_SECRET = 'sluice-control-token';

export interface SidecarPorts {
  readonly inbound: number;
  readonly outbound: number;
  readonly admin: number;
}

export const DEFAULT_PORTS: SidecarPorts = Object.freeze({ inbound: 15006, outbound: 15001, admin: 15000 });

/** Everything the sidecar container is built from, for one workload. */
export interface SidecarOptions {
  readonly image: string;
  readonly ports: SidecarPorts;
  /** The app's port the inbound side forwards to; undefined = the app takes no traffic (a worker). */
  readonly appPort: number | undefined;
  /** Where admin binds: loopback (default) or a wildcard, which also exposes it for scraping. */
  readonly adminAddress: string;
  readonly source: PolicySource;
  readonly legacy: boolean;
  readonly resources: SidecarResources;
  /** The sidecar's `--service`, for policy selectors. */
  readonly service: string;
  /** Where the sidecar sends its spans (OTLP/HTTP); undefined: tracing off. */
  readonly traces: TraceExport | undefined;
}

export interface TraceExport {
  /** The OTLP/HTTP traces URL. */
  readonly endpoint: string;
  /** The config service's receiver: the control token goes with every export. */
  readonly withControlToken: boolean;
  /** Share of new traces sampled (parent-based: a caller's decision wins). */
  readonly sampling: number;
}

/** The config service's HTTP port (fleet API, metrics, and the OTLP trace receiver). */
export const CONTROL_API_PORT = 15014;

const TRACE_URL = /^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/;

/** `sluice.dev/traces`: off (default), `control` (the config service's receiver), or a collector URL. */
function readTraces(a: Annotations, source: PolicySource): TraceExport | undefined {
  const v = a[ANNOTATION.traces];
  const rate = a[ANNOTATION.traceSampling];
  if (v === undefined || v === 'off') {
    if (rate !== undefined) throw new InjectError('bad-annotation', `${ANNOTATION.traceSampling} needs ${ANNOTATION.traces} ("control" or a collector URL)`);
    return undefined;
  }
  const sampling = rate === undefined ? 1 : Number(rate);
  if (rate !== undefined && (!/^(0|1|0?\.\d+|1\.0*)$/.test(rate) || sampling > 1)) {
    throw new InjectError('bad-annotation', `${ANNOTATION.traceSampling}: must be a ratio from 0 to 1, got ${JSON.stringify(rate)}`);
  }
  if (v === 'control') {
    if (source.kind !== 'control') throw new InjectError('bad-annotation', `${ANNOTATION.traces}: "control" needs the sidecar to follow a config service (${ANNOTATION.control})`);
    // The first replica address's host; traces go to the same Service's HTTP port.
    const first = source.address.split(',')[0] as string;
    const host = first.slice(0, first.lastIndexOf(':'));
    return { endpoint: `http://${host}:${CONTROL_API_PORT}/v1/traces`, withControlToken: true, sampling };
  }
  if (!TRACE_URL.test(v)) throw new InjectError('bad-annotation', `${ANNOTATION.traces}: must be "off", "control" or an http(s) URL of an OTLP/HTTP traces endpoint, got ${JSON.stringify(v)}`);
  return { endpoint: v, withControlToken: false, sampling };
}

export type Annotations = Readonly<Record<string, string>>;

/** A workload's annotations, string-valued as the API requires (a bare `false` in YAML is not). */
export function readAnnotations(value: unknown, where: string): Annotations {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new InjectError('bad-workload', `${where}: annotations must be a map`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') {
      if (k.startsWith('sluice.dev/')) throw new InjectError('bad-annotation', `${k}: annotation values are strings: quote it (${k}: "${String(v)}")`);
      continue;
    }
    out[k] = v;
  }
  return out;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const next = Math.min((row[j] as number) + 1, (row[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = row[j] as number;
      row[j] = next;
    }
  }
  return row[b.length] as number;
}

/** Unknown `sluice.dev/` annotations are refused, with the closest known one as a hint. */
export function checkAnnotationNames(a: Annotations): void {
  for (const key of Object.keys(a)) {
    if (!key.startsWith('sluice.dev/') || KNOWN.has(key)) continue;
    // A key longer than Kubernetes allows (253 + '/' + 63) is no typo of a known one, and the
    // distance to it would cost a second per MB of key: no hint, and the key is cut in the message.
    const near = key.length > 317 ? undefined : [...KNOWN].map((k) => ({ k, d: distance(key, k) })).sort((x, y) => x.d - y.d)[0];
    const hint = near !== undefined && near.d <= 3 ? ` (did you mean ${near.k}?)` : '';
    const shown = key.length > 80 ? `${key.slice(0, 80)}… (${key.length} characters)` : key;
    throw new InjectError('bad-annotation', `${shown}: unknown annotation${hint}; known: ${[...KNOWN].join(', ')}`);
  }
}

export function readBoolean(a: Annotations, key: string): boolean | undefined {
  const v = a[key];
  if (v === undefined) return undefined;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new InjectError('bad-annotation', `${key}: must be "true" or "false", got ${JSON.stringify(v)}`);
}

function readPort(a: Annotations, key: string, fallback: number): number {
  const v = a[key];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 65535) throw new InjectError('bad-annotation', `${key}: must be a port from 1 to 65535, got ${JSON.stringify(v)}`);
  return n;
}

const DNS_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function readName(a: Annotations, key: string, fallback: string): string {
  const v = a[key] ?? fallback;
  if (v.length > 253 || !DNS_NAME.test(v)) throw new InjectError('bad-annotation', `${key}: must be a Kubernetes object name (lowercase letters, digits, '-', '.'), got ${JSON.stringify(v)}`);
  return v;
}

const TARGET = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):(\d{1,5})$/;

export function checkControlAddress(what: string, v: string): string {
  if (v === 'off') return v;
  const targets = v.split(',').map((t) => t.trim());
  for (const t of targets) {
    const m = TARGET.exec(t);
    if (m === null || Number(m[3]) < 1 || Number(m[3]) > 65535) {
      throw new InjectError('bad-annotation', `${what}: must be HOST:PORT[,HOST:PORT...] or "off", got ${JSON.stringify(v)}`);
    }
  }
  return targets.join(',');
}

const ADMIN_ADDRESSES = ['127.0.0.1', '::1', '0.0.0.0', '::'];

/** Loopback admin keeps /shutdown and /config off the pod network; a wildcard exposes them (and /metrics). */
export function isLoopback(address: string): boolean {
  return address === '127.0.0.1' || address === '::1';
}

/** The app port: a number, the name of an app containerPort, or "none". */
export interface AppPortChoice {
  readonly annotation: string | undefined;
  /** Looks a containerPort name up among the app containers. */
  byName(name: string): number | undefined;
  /** The first containerPort of the first container, if any. */
  readonly first: number | undefined;
}

function readAppPort(a: Annotations, c: AppPortChoice): number | undefined {
  const v = c.annotation;
  if (v === undefined) return c.first;
  if (v === 'none') return undefined;
  if (/^\d+$/.test(v)) return readPort(a, ANNOTATION.appPort, 0);
  const found = c.byName(v);
  if (found === undefined) throw new InjectError('bad-annotation', `${ANNOTATION.appPort}: ${JSON.stringify(v)} is neither a port number, "none", nor the name of a containerPort of the app`);
  return found;
}

/** Annotations win over the command line's settings, which win over the built-in defaults. */
export function sidecarOptions(a: Annotations, settings: InjectSettings, app: Omit<AppPortChoice, 'annotation'>, service: string): SidecarOptions {
  checkAnnotationNames(a);
  const ports: SidecarPorts = {
    inbound: readPort(a, ANNOTATION.inboundPort, DEFAULT_PORTS.inbound),
    outbound: readPort(a, ANNOTATION.outboundPort, DEFAULT_PORTS.outbound),
    admin: readPort(a, ANNOTATION.adminPort, DEFAULT_PORTS.admin),
  };
  const seen = new Map<number, string>();
  for (const [name, p] of Object.entries(ports)) {
    const other = seen.get(p);
    if (other !== undefined) throw new InjectError('port-conflict', `the ${other} and ${name} ports are both ${p}`);
    seen.set(p, name);
  }
  const appPort = readAppPort(a, { ...app, annotation: a[ANNOTATION.appPort] });
  if (appPort !== undefined && seen.has(appPort)) {
    throw new InjectError('port-conflict', `the app port ${appPort} is also the sidecar's ${seen.get(appPort)} port: set ${ANNOTATION.appPort} or move the sidecar's port`);
  }
  const adminAddress = a[ANNOTATION.adminAddress] ?? '127.0.0.1';
  if (!ADMIN_ADDRESSES.includes(adminAddress)) {
    throw new InjectError('bad-annotation', `${ANNOTATION.adminAddress}: must be one of ${ADMIN_ADDRESSES.join(', ')}, got ${JSON.stringify(adminAddress)}`);
  }
  const control = checkControlAddress(ANNOTATION.control, a[ANNOTATION.control] ?? settings.control);
  const configMap = a[ANNOTATION.policyConfigMap];
  let source: PolicySource;
  if (configMap !== undefined) {
    if (a[ANNOTATION.control] !== undefined && control !== 'off') {
      throw new InjectError('bad-annotation', `${ANNOTATION.policyConfigMap} and ${ANNOTATION.control} both name a policy source: keep one (or set ${ANNOTATION.control}: "off")`);
    }
    source = { kind: 'configmap', name: readName(a, ANNOTATION.policyConfigMap, configMap) };
  } else if (control === 'off') {
    source = { kind: 'bundled' };
  } else {
    source = { kind: 'control', address: control, tokenSecret: readName(a, ANNOTATION.controlTokenSecret, settings.tokenSecret) };
  }
  return Object.freeze({
    image: settings.image,
    ports: Object.freeze(ports),
    appPort,
    adminAddress,
    source: Object.freeze(source),
    legacy: readBoolean(a, ANNOTATION.legacy) ?? settings.legacy,
    resources: sidecarResources(a[ANNOTATION.cpu], a[ANNOTATION.memory]),
    service,
    traces: readTraces(a, source),
  });
}
