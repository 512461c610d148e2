// Offline checks of what injection writes, as far as can be done without an API server:
// 1. kubernetes-models: each object against the JSON schema generated from Kubernetes' OpenAPI
//    (types, required fields, quantity formats);
// 2. no unknown fields in containers, probes, volumes...: the schemas above do not reject them, so
//    each object is checked against the property names its generated validator knows;
// 3. the API server's own rules the schemas cannot say: restartPolicy only "Always" and only on
//    init containers, unique container / port / volume names, mounts of existing volumes, one
//    handler per probe, port names as IANA service names.
import { readFileSync } from 'node:fs';
import { CronJob, Job } from 'kubernetes-models/batch/v1';
import { DaemonSet, Deployment, ReplicaSet, StatefulSet } from 'kubernetes-models/apps/v1';
import { Pod } from 'kubernetes-models/v1';
import { ROOT } from './cli.ts';

type Json = Record<string, unknown>;

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Pod': Pod,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'apps/v1/DaemonSet': DaemonSet,
  'apps/v1/ReplicaSet': ReplicaSet,
  'batch/v1/Job': Job,
  'batch/v1/CronJob': CronJob,
};

const fieldCache = new Map<string, ReadonlySet<string>>();

/** The property names the generated validator for a core/v1 type checks. */
function knownFields(type: string): ReadonlySet<string> {
  let set = fieldCache.get(type);
  if (set === undefined) {
    const src = readFileSync(`${ROOT}/node_modules/kubernetes-models/_schemas/IoK8sApiCoreV1${type}.js`, 'utf8');
    set = new Set([...src.matchAll(/void 0!==data\.([A-Za-z0-9_]+)/g)].map((m) => m[1] as string));
    if (set.size === 0) throw new Error(`no fields found for ${type}`);
    fieldCache.set(type, set);
  }
  return set;
}

/** Which core/v1 type sits under each field of a type, for the strict walk. */
const CHILDREN: Record<string, Record<string, string>> = {
  Container: {
    ports: 'ContainerPort', env: 'EnvVar', startupProbe: 'Probe', livenessProbe: 'Probe', readinessProbe: 'Probe',
    lifecycle: 'Lifecycle', resources: 'ResourceRequirements', securityContext: 'SecurityContext', volumeMounts: 'VolumeMount',
  },
  Probe: { exec: 'ExecAction', httpGet: 'HTTPGetAction' },
  Lifecycle: { postStart: 'LifecycleHandler', preStop: 'LifecycleHandler' },
  LifecycleHandler: { exec: 'ExecAction', httpGet: 'HTTPGetAction' },
  EnvVar: { valueFrom: 'EnvVarSource' },
  EnvVarSource: { fieldRef: 'ObjectFieldSelector' },
  SecurityContext: { capabilities: 'Capabilities', seccompProfile: 'SeccompProfile' },
  Volume: { emptyDir: 'EmptyDirVolumeSource', downwardAPI: 'DownwardAPIVolumeSource', secret: 'SecretVolumeSource', configMap: 'ConfigMapVolumeSource' },
  DownwardAPIVolumeSource: { items: 'DownwardAPIVolumeFile' },
  DownwardAPIVolumeFile: { fieldRef: 'ObjectFieldSelector' },
};

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function strict(value: unknown, type: string, where: string, problems: string[]): void {
  if (!isObject(value)) return;
  const known = knownFields(type);
  for (const [k, v] of Object.entries(value)) {
    if (!known.has(k)) {
      problems.push(`${where}.${k}: not a field of ${type}`);
      continue;
    }
    const childType = CHILDREN[type]?.[k];
    if (childType === undefined) continue;
    if (Array.isArray(v)) v.forEach((x, i) => strict(x, childType, `${where}.${k}[${i}]`, problems));
    else strict(v, childType, `${where}.${k}`, problems);
  }
}

const IANA_SVC_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?=[a-z0-9]))*$/;

function podRules(spec: Json, where: string, problems: string[]): void {
  const inits = (spec.initContainers ?? []) as Json[];
  const containers = (spec.containers ?? []) as Json[];
  const names = new Set<string>();
  const portNames = new Set<string>();
  const volumes = new Set<string>();
  for (const v of (spec.volumes ?? []) as Json[]) {
    if (volumes.has(v.name as string)) problems.push(`${where}.volumes: ${String(v.name)} twice`);
    volumes.add(v.name as string);
    strict(v, 'Volume', `${where}.volumes[${String(v.name)}]`, problems);
  }
  for (const [field, list] of [['initContainers', inits], ['containers', containers]] as const) {
    for (const c of list) {
      const at = `${where}.${field}[${String(c.name)}]`;
      strict(c, 'Container', at, problems);
      if (names.has(c.name as string)) problems.push(`${at}: container name used twice`);
      names.add(c.name as string);
      if (c.restartPolicy !== undefined && (field !== 'initContainers' || c.restartPolicy !== 'Always')) {
        problems.push(`${at}.restartPolicy: only "Always", and only on init containers (got ${JSON.stringify(c.restartPolicy)})`);
      }
      if (field === 'initContainers' && c.restartPolicy !== 'Always') {
        for (const p of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
          if (c[p] !== undefined) problems.push(`${at}.${p}: only a restartable init container may have probes`);
        }
      }
      for (const p of (c.ports ?? []) as Json[]) {
        if (p.name === undefined) continue;
        if (!IANA_SVC_NAME.test(p.name as string)) problems.push(`${at}.ports: ${String(p.name)} is not an IANA service name (15 characters at most)`);
        if (portNames.has(p.name as string)) problems.push(`${at}.ports: ${String(p.name)} is used twice in the pod`);
        portNames.add(p.name as string);
      }
      for (const m of (c.volumeMounts ?? []) as Json[]) {
        if (!volumes.has(m.name as string)) problems.push(`${at}.volumeMounts: no volume named ${String(m.name)}`);
      }
      const envNames = new Set<string>();
      for (const e of (c.env ?? []) as Json[]) {
        if (envNames.has(e.name as string)) problems.push(`${at}.env: ${String(e.name)} twice`);
        envNames.add(e.name as string);
      }
      for (const p of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
        const probe = c[p];
        if (!isObject(probe)) continue;
        const handlers = ['exec', 'httpGet', 'tcpSocket', 'grpc'].filter((h) => probe[h] !== undefined);
        if (handlers.length !== 1) problems.push(`${at}.${p}: needs exactly one handler, has ${handlers.length}`);
      }
    }
  }
}

/** Problems found in one manifest object ([] = valid as far as can be checked offline). */
export function k8sProblems(obj: unknown): string[] {
  if (!isObject(obj)) return ['not an object'];
  const key = `${String(obj.apiVersion)}/${String(obj.kind)}`;
  const Model = MODELS[key];
  if (Model === undefined) return [];
  const problems: string[] = [];
  try {
    new Model(obj as never).validate();
  } catch (err) {
    problems.push(`${key}: ${(err as Error).message}`);
  }
  const path = obj.kind === 'Pod' ? [] : obj.kind === 'CronJob' ? ['spec', 'jobTemplate', 'spec', 'template'] : ['spec', 'template'];
  let node: unknown = obj;
  for (const k of path) node = isObject(node) ? node[k] : undefined;
  if (isObject(node) && isObject(node.spec)) podRules(node.spec, path.concat('spec').join('.'), problems);
  return problems;
}

/**
 * A deliberately separate RFC 6902 implementation (add, remove, replace, test), so the webhook's
 * patches are checked by code that did not make them.
 */
export function applyJsonPatch(doc: unknown, ops: readonly Json[]): unknown {
  let root: unknown = structuredClone(doc);
  for (const op of ops) {
    const path = op.path as string;
    if (typeof path !== 'string' || (path !== '' && !path.startsWith('/'))) throw new Error(`bad path ${JSON.stringify(path)}`);
    const tokens = path === '' ? [] : path.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
    if (tokens.length === 0) {
      if (op.op === 'add' || op.op === 'replace') root = structuredClone(op.value);
      else throw new Error(`cannot ${String(op.op)} the root`);
      continue;
    }
    let parent: unknown = root;
    for (const t of tokens.slice(0, -1)) {
      parent = Array.isArray(parent) ? parent[Number(t)] : isObject(parent) ? parent[t] : undefined;
      if (parent === undefined) throw new Error(`${path}: ${t} does not exist`);
    }
    const last = tokens[tokens.length - 1] as string;
    if (Array.isArray(parent)) {
      const i = last === '-' ? parent.length : Number(last);
      if (!Number.isInteger(i) || i < 0 || i > parent.length || (op.op !== 'add' && i === parent.length)) throw new Error(`${path}: index out of range`);
      if (op.op === 'add') parent.splice(i, 0, structuredClone(op.value));
      else if (op.op === 'replace') parent[i] = structuredClone(op.value);
      else if (op.op === 'remove') parent.splice(i, 1);
      else throw new Error(`unsupported op ${String(op.op)}`);
    } else if (isObject(parent)) {
      if ((op.op === 'replace' || op.op === 'remove') && !Object.hasOwn(parent, last)) throw new Error(`${path}: does not exist`);
      if (op.op === 'add' || op.op === 'replace') parent[last] = structuredClone(op.value);
      else if (op.op === 'remove') delete parent[last];
      else throw new Error(`unsupported op ${String(op.op)}`);
    } else {
      throw new Error(`${path}: parent is not a container`);
    }
  }
  return root;
}
