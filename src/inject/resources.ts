// The sidecar's resources, and the `sluice.dev/cpu` / `sluice.dev/memory` annotations that change
// them: `REQUEST` or `REQUEST/LIMIT`, each a Kubernetes quantity. Checked here, so a typo is named
// by its annotation instead of surfacing as an API server error about a generated container.
import { InjectError } from './errors.ts';

export interface SidecarResources {
  readonly requests: { readonly cpu: string; readonly memory: string };
  readonly limits: { readonly cpu?: string; readonly memory: string };
}

/**
 * Defaults. CPU has a request and no limit: a throttled proxy adds latency to every request of its
 * app, so CPU is left to the node's fair share. Memory has a limit: every buffer in sluice is
 * bounded, and the image's production run peaks near 170 MiB under load (Dockerfile), so 256 MiB
 * leaves room for the exec probes (~25-45 MiB each while they run, in the same cgroup).
 */
export const DEFAULT_RESOURCES: SidecarResources = Object.freeze({
  requests: Object.freeze({ cpu: '100m', memory: '128Mi' }),
  limits: Object.freeze({ memory: '256Mi' }),
});

const SUFFIX: Readonly<Record<string, number>> = {
  n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A quantity's value in base units (cores, bytes), or undefined when it is not one. */
export function quantityValue(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?|\.\d+)([a-zA-Z]*)$/.exec(text);
  if (m === null) return undefined;
  const factor = SUFFIX[m[2] as string];
  return factor === undefined ? undefined : Number(m[1]) * factor;
}

function pair(annotation: string, text: string): { request: string; limit: string | undefined } {
  const parts = text.split('/').map((s) => s.trim());
  const [request, limit, extra] = parts;
  const bad = (why: string): InjectError =>
    new InjectError('bad-annotation', `${annotation}: ${why}, got ${JSON.stringify(text)} (write REQUEST or REQUEST/LIMIT, e.g. "200m" or "128Mi/512Mi")`);
  if (extra !== undefined || request === undefined || request === '') throw bad('expected one or two quantities');
  for (const q of [request, limit]) {
    if (q === undefined) continue;
    const v = quantityValue(q);
    if (v === undefined) throw bad(`${JSON.stringify(q)} is not a Kubernetes quantity`);
    if (v <= 0) throw bad(`${JSON.stringify(q)} must be more than 0`);
  }
  if (limit !== undefined && (quantityValue(limit) as number) < (quantityValue(request) as number)) throw bad('the limit is below the request');
  return { request, limit };
}

/**
 * `sluice.dev/cpu: "200m"` sets the request (still no limit), `"200m/1"` both.
 * `sluice.dev/memory: "192Mi"` sets request and limit to that amount (what the sidecar is
 * promised is what it may use), `"128Mi/512Mi"` each.
 */
export function sidecarResources(cpu: string | undefined, memory: string | undefined): SidecarResources {
  const c = cpu === undefined ? { request: DEFAULT_RESOURCES.requests.cpu, limit: DEFAULT_RESOURCES.limits.cpu } : pair('sluice.dev/cpu', cpu);
  const m = memory === undefined ? { request: DEFAULT_RESOURCES.requests.memory, limit: DEFAULT_RESOURCES.limits.memory } : pair('sluice.dev/memory', memory);
  return {
    requests: { cpu: c.request, memory: m.request },
    limits: { ...(c.limit === undefined ? {} : { cpu: c.limit }), memory: m.limit ?? m.request },
  };
}
