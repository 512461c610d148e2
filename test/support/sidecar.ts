// Start a whole sidecar in this process on ephemeral ports, from a policy written the way users
// write it (YAML through the real parser), so integration tests exercise config parsing too.
// Every listener port is forced to 0; tests read the bound ports back from the sidecar.
import type { AddressInfo } from 'node:net';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { parsePolicy } from '../../src/policy/parse.ts';
import { startSidecar, type SidecarOptions } from '../../src/proxy/sidecar.ts';
import type { SidecarPolicy } from '../../src/policy/types.ts';
import { parsePrometheus, type Sample } from './metrics.ts';
import { send, type SendResult } from './http-client.ts';
import { deadPort } from './raw-upstream.ts';

type Sidecar = Awaited<ReturnType<typeof startSidecar>>;
type Json = Record<string, unknown>;

/** `spec` overrides merged into the test base policy (objects merge, arrays and scalars replace). */
export type SpecOverrides = Json;

export interface TestSidecar {
  readonly sidecar: Sidecar;
  readonly policy: SidecarPolicy;
  /** The YAML document the sidecar was started from (ports 0). */
  readonly yaml: string;
  readonly outboundPort: number;
  readonly inboundPort: number;
  readonly adminPort: number;
  readonly adminUrl: string;
  /** http://127.0.0.1:<outbound>, for undici's ProxyAgent. */
  readonly proxyUrl: string;
  /** GET an admin path. */
  admin(path: string): Promise<SendResult>;
  /** Scrape /metrics. */
  metrics(): Promise<Sample[]>;
  /** Parse a new spec (same rules as start) and apply it; throws with the parser errors. */
  reload(spec: SpecOverrides | string): Promise<void>;
  /** Shut down at once (idempotent). */
  close(): Promise<void>;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function deepMerge(base: Json, over: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isObject(b) && isObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

/** A small upstream entry for `outbound.upstreams`. */
export function upstream(name: string, endpoints: string | readonly string[], extra: Json = {}): Json {
  return { name, hosts: [name], endpoints: typeof endpoints === 'string' ? [endpoints] : endpoints, ...extra };
}

/** The base every test policy starts from: fast defaults, all listeners on 127.0.0.1:0. */
async function baseSpec(): Promise<Json> {
  return {
    admin: { address: '127.0.0.1', port: 0 },
    limits: { headersTimeoutMs: 5000, keepAliveTimeoutMs: 5000, maxHeaderBytes: 16384 },
    shutdown: { graceMs: 2000 },
    inbound: {
      listener: { address: '127.0.0.1', port: 0 },
      // No app unless the test names one: a port nothing listens on.
      app: { address: '127.0.0.1', port: await deadPort() },
      timeouts: { requestMs: 5000, idleMs: 5000 },
    },
    outbound: {
      listener: { address: '127.0.0.1', port: 0 },
      unknownHosts: 'forward',
      defaults: {
        timeouts: { connectMs: 1000, requestMs: 5000, perTryMs: 2000, idleMs: 5000 },
        // Tiny back-off so retry tests are fast.
        retry: { backoff: { baseMs: 5, capMs: 20 } },
      },
      upstreams: [],
    },
  };
}

/**
 * Force every listener to 127.0.0.1:0 in a parsed document (full-YAML input). Listeners the file
 * leaves out would take the default ports (15000/15001/15006), so they are written in explicitly.
 * A listener switched off (a non-object value) stays off.
 */
function zeroPorts(doc: Json): Json {
  const spec: Json = isObject(doc['spec']) ? { ...doc['spec'] } : {};
  const local = (l: unknown): unknown => (l === undefined || isObject(l) ? { address: '127.0.0.1', port: 0 } : l);
  spec['admin'] = local(spec['admin']);
  for (const dir of ['inbound', 'outbound']) {
    const d: Json = isObject(spec[dir]) ? { ...(spec[dir] as Json) } : {};
    d['listener'] = local(d['listener']);
    spec[dir] = d;
  }
  return { ...doc, spec };
}

export async function buildPolicyYaml(spec: SpecOverrides | string): Promise<string> {
  if (typeof spec === 'string') return stringifyYaml(zeroPorts(parseYaml(spec) as Json));
  const doc = {
    apiVersion: 'sluice.dev/v1alpha1',
    kind: 'SidecarPolicy',
    metadata: { name: 'test' },
    spec: deepMerge(await baseSpec(), spec),
  };
  // Overrides cannot pin a fixed port either: parallel test files would collide on it.
  return stringifyYaml(zeroPorts(doc));
}

export async function buildPolicy(spec: SpecOverrides | string): Promise<{ policy: SidecarPolicy; yaml: string }> {
  const yaml = await buildPolicyYaml(spec);
  const parsed = parsePolicy(yaml, 'test-policy.yaml');
  if (!parsed.ok) throw new Error(`test policy rejected:\n${JSON.stringify(parsed.errors, null, 2)}\n---\n${yaml}`);
  return { policy: parsed.policy, yaml };
}

/** `options` passes through to startSidecar (clock, random, log) for tests that need them. */
export async function startTestSidecar(
  spec: SpecOverrides | string = {},
  options: Omit<SidecarOptions, 'policy'> = {},
): Promise<TestSidecar> {
  const { policy, yaml } = await buildPolicy(spec);
  const sidecar = await startSidecar({ ...options, policy });
  const port = (a: AddressInfo | undefined): number => a?.port ?? 0;
  const adminPort = port(sidecar.addresses.admin);
  let closing: Promise<void> | undefined;
  const t: TestSidecar = {
    sidecar,
    policy,
    yaml,
    outboundPort: port(sidecar.addresses.outbound),
    inboundPort: port(sidecar.addresses.inbound),
    adminPort,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    proxyUrl: `http://127.0.0.1:${port(sidecar.addresses.outbound)}`,
    admin: (path: string) => send({ port: adminPort, path }),
    async metrics() {
      const r = await send({ port: adminPort, path: '/metrics' });
      if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${r.text}`);
      return parsePrometheus(r.text);
    },
    async reload(next: SpecOverrides | string) {
      const { policy: p } = await buildPolicy(next);
      await sidecar.applyPolicy(p);
    },
    close() {
      closing ??= sidecar.close();
      return closing;
    },
  };
  return t;
}
