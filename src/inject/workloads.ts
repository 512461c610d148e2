// Which objects carry a pod template, where it is, and who the pod is (its service name). Kinds
// not listed here pass through unchanged: injection never guesses at a custom resource's shape.
import { readAnnotations, type InjectSettings, type SidecarOptions } from './annotations.ts';
import { InjectError } from './errors.ts';
import { injectPod } from './pod-spec.ts';

type Json = Record<string, unknown>;

/** Kind -> its apiVersion and the path from the object to its pod template ([] = the object is a pod). */
export const WORKLOAD_KINDS: Readonly<Record<string, { readonly apiVersion: string; readonly template: readonly string[] }>> = Object.freeze({
  Pod: { apiVersion: 'v1', template: [] },
  Deployment: { apiVersion: 'apps/v1', template: ['spec', 'template'] },
  StatefulSet: { apiVersion: 'apps/v1', template: ['spec', 'template'] },
  DaemonSet: { apiVersion: 'apps/v1', template: ['spec', 'template'] },
  ReplicaSet: { apiVersion: 'apps/v1', template: ['spec', 'template'] },
  Job: { apiVersion: 'batch/v1', template: ['spec', 'template'] },
  CronJob: { apiVersion: 'batch/v1', template: ['spec', 'jobTemplate', 'spec', 'template'] },
});

export type WorkloadOutcome =
  | { readonly kind: 'ignored' }
  | { readonly kind: 'skipped'; readonly reason: string; readonly warn: boolean }
  | { readonly kind: 'injected'; readonly object: Json; readonly options: SidecarOptions; readonly notes: readonly string[] };

export interface WorkloadOptions {
  readonly settings: InjectSettings;
  readonly requireOptIn?: boolean;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** `Deployment orders`, for messages. */
export function describeObject(obj: unknown): string {
  if (!isObject(obj)) return 'a non-object document';
  const meta = isObject(obj.metadata) ? obj.metadata : {};
  const name = str(meta.name) ?? (str(meta.generateName) === undefined ? '(unnamed)' : `${String(meta.generateName)}*`);
  return `${str(obj.kind) ?? '(no kind)'} ${name}`;
}

/**
 * The sidecar's --service: the pod's `app.kubernetes.io/name` or `app` label, the workload's, or
 * the workload's name. A pod from a controller often has only a generated name at admission
 * (`orders-7d9f8b7c4-`): its `pod-template-hash` suffix is dropped.
 */
export function serviceName(obj: Json, template: { metadata?: unknown }): string | undefined {
  const meta = isObject(obj.metadata) ? obj.metadata : {};
  const tmeta = isObject(template.metadata) ? template.metadata : {};
  for (const labels of [tmeta.labels, meta.labels]) {
    if (!isObject(labels)) continue;
    const name = str(labels['app.kubernetes.io/name']) ?? str(labels.app);
    if (name !== undefined) return name;
  }
  const name = str(meta.name);
  if (name !== undefined) return name;
  let generated = str(meta.generateName)?.replace(/-+$/, '');
  const hash = isObject(meta.labels) ? str(meta.labels['pod-template-hash']) : undefined;
  if (generated !== undefined && hash !== undefined && generated.endsWith(`-${hash}`)) generated = generated.slice(0, -hash.length - 1);
  return generated === '' ? undefined : generated;
}

function at(obj: Json, path: readonly string[]): Json | undefined {
  let node: unknown = obj;
  for (const key of path) {
    if (!isObject(node)) return undefined;
    node = node[key];
  }
  return isObject(node) ? node : undefined;
}

/** A copy of obj with the value at path replaced (each object on the way copied, nothing shared mutated). */
function replaceAt(obj: Json, path: readonly string[], value: Json): Json {
  if (path.length === 0) return value;
  const [head, ...rest] = path as [string, ...string[]];
  return { ...obj, [head]: replaceAt(obj[head] as Json, rest, value) };
}

export function isWorkload(obj: unknown): obj is Json {
  if (!isObject(obj) || typeof obj.kind !== 'string') return false;
  // Own keys only: `kind: toString` must not find Object.prototype's.
  const k = Object.hasOwn(WORKLOAD_KINDS, obj.kind) ? WORKLOAD_KINDS[obj.kind] : undefined;
  return k !== undefined && obj.apiVersion === k.apiVersion;
}

/** Injects one object; throws InjectError for a workload it must refuse (bad annotation, clash). */
export function injectWorkload(obj: unknown, o: WorkloadOptions): WorkloadOutcome {
  if (!isWorkload(obj)) return { kind: 'ignored' };
  const path = (WORKLOAD_KINDS[obj.kind as string] as { template: readonly string[] }).template;
  const template = path.length === 0 ? obj : at(obj, path);
  if (template === undefined) throw new InjectError('bad-workload', `no pod template at ${path.join('.')}`);
  const tmeta = isObject(template.metadata) ? template.metadata : {};
  const annotations = {
    ...(path.length === 0 ? {} : readAnnotations(isObject(obj.metadata) ? obj.metadata.annotations : undefined, 'metadata')),
    ...readAnnotations(tmeta.annotations, path.length === 0 ? 'metadata' : `${path.join('.')}.metadata`),
  };
  const service = serviceName(obj, template);
  if (service === undefined) throw new InjectError('bad-workload', 'no name, generateName or app label to name its service by');
  const result = injectPod(template, { annotations, settings: o.settings, service, requireOptIn: o.requireOptIn });
  if (result.kind === 'skipped') return result;
  const injected: Json = { ...template, metadata: result.template.metadata, spec: result.template.spec };
  return { kind: 'injected', object: replaceAt(obj, path, injected), options: result.options, notes: result.notes };
}
