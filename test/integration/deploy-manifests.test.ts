// Every file under deploy/, checked offline as far as it can be without a cluster:
// - each YAML document is a known kind, valid against the Kubernetes (or CRD) schemas of
//   kubernetes-models, and has no unknown field (TypeScript's excess-property check against the
//   same models' types: the JSON schemas accept unknown fields, an API server in strict mode does not);
// - the kustomizations build with `kubectl kustomize`, and what they build is checked the same way;
// - the conventions the webhook, the image and these manifests share: the image tag, resources,
//   probes and the restricted Pod Security Standard on every container, Service ports and selectors
//   that reach a container, NetworkPolicy ports that are container ports;
// - the commands in the Deployments run: `sluice control` and `sluice webhook` start with the args
//   as written (paths moved to a temporary folder) and answer their probes; the git credential
//   wiring answers git; gen-webhook-tls.sh makes a certificate the webhook serves;
// - the example is injected by `sluice inject` into pods that still pass all of the above, and its
//   apps talk through a real sidecar;
// - alert rules pass `promtool check rules` (and fire in `promtool test rules`), and the rules and
//   the Grafana dashboard name only metrics that src/ declares.
// Tools that may be missing (kubectl, promtool, openssl, ssh) skip their tests, with the reason in
// the test's name; nothing else is skipped.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { ADMIN_PORT_NAME, INBOUND_PORT_NAME } from '../../src/inject/sidecar.ts';
import { buildPolicySet } from '../../src/control/policy-set.ts';
import { formatPolicyError, parsePolicy } from '../../src/policy/parse.ts';
import { ROOT, runCli, startCliProxy } from '../support/cli.ts';
import { policyRepo } from '../support/control.ts';
import { k8sProblems } from '../support/inject-k8s.ts';
import { eventually } from '../support/lifecycle.ts';
import { toolAvailable } from '../support/tools.ts';

const exec = promisify(execFile);
type Json = Record<string, unknown>;

const DEPLOY = join(ROOT, 'deploy');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const IMAGE = `ghcr.io/sluice-dev/sluice:${VERSION}`;

const KUBECTL = toolAvailable('kubectl', ['version', '--client'], 'this machine kind has it (google-cloud-sdk); Debian\'s kubernetes-client is too old for kustomize components');
const PROMTOOL = toolAvailable('promtool', ['--version'], '.ci/run installs Debian\'s prometheus package');
const OPENSSL = toolAvailable('openssl', ['version'], '.ci/run installs it');
const SSH = toolAvailable('ssh', ['-V'], '.ci/run installs openssh-client');
const NO_KUBECTL = KUBECTL ? '' : ' (skipped: kubectl is not on PATH)';
const NO_PROMTOOL = PROMTOOL ? '' : ' (skipped: promtool is not on PATH; Debian package "prometheus")';
const NO_OPENSSL = OPENSSL ? '' : ' (skipped: openssl is not on PATH)';
const NO_SSH = SSH ? '' : ' (skipped: ssh is not on PATH)';
for (const reason of [NO_KUBECTL, NO_PROMTOOL, NO_OPENSSL, NO_SSH]) if (reason !== '') console.warn(`deploy-manifests:${reason}`);

// --- the files ------------------------------------------------------------------------------

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}
const FILES = walk(DEPLOY).map((f) => relative(DEPLOY, f)).sort();
const YAML_FILES = FILES.filter((f) => /\.ya?ml$/.test(f));

interface Doc {
  readonly where: string;
  readonly obj: Json;
  readonly text: string;
}

/** YAML 1.1, as kubectl reads it (`on`, `yes` and `0440` mean what they mean to the API server). */
function parseDocs(text: string, where: string): Doc[] {
  const out: Doc[] = [];
  parseAllDocuments(text, { version: '1.1' }).forEach((d, i) => {
    if (d.errors.length > 0) throw new Error(`${where} document ${i + 1}: ${d.errors.map((e) => e.message).join('; ')}`);
    if (d.warnings.length > 0) throw new Error(`${where} document ${i + 1}: ${d.warnings.map((e) => e.message).join('; ')}`);
    const obj = d.toJS() as unknown;
    if (obj === null || obj === undefined) return;
    if (typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`${where} document ${i + 1}: not a mapping`);
    const o = obj as Json;
    out.push({ where: `${where}#${i + 1} ${String(o.kind)}/${String((o.metadata as Json | undefined)?.name)}`, obj: o, text: String(d) });
  });
  return out;
}

const DOCS = new Map(YAML_FILES.map((f) => [f, parseDocs(readFileSync(join(DEPLOY, f), 'utf8'), `deploy/${f}`)]));

// --- kinds and their models -----------------------------------------------------------------

/** Every kind deploy/ may contain: its model's module, which exports the class and its I<Kind> type. */
const MODELS: Record<string, string> = {
  'v1/Namespace': 'kubernetes-models/v1',
  'v1/ServiceAccount': 'kubernetes-models/v1',
  'v1/ConfigMap': 'kubernetes-models/v1',
  'v1/Service': 'kubernetes-models/v1',
  'apps/v1/Deployment': 'kubernetes-models/apps/v1',
  'policy/v1/PodDisruptionBudget': 'kubernetes-models/policy/v1',
  'networking.k8s.io/v1/NetworkPolicy': 'kubernetes-models/networking.k8s.io/v1',
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': 'kubernetes-models/admissionregistration.k8s.io/v1',
  'monitoring.coreos.com/v1/PodMonitor': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
  'monitoring.coreos.com/v1/ServiceMonitor': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
  'monitoring.coreos.com/v1/PrometheusRule': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
  'cert-manager.io/v1/Certificate': '@kubernetes-models/cert-manager/cert-manager.io/v1',
  'cert-manager.io/v1/Issuer': '@kubernetes-models/cert-manager/cert-manager.io/v1',
};
const CRD_GROUPS = ['monitoring.coreos.com/', 'cert-manager.io/'];
const KUSTOMIZE_KINDS = new Set(['kustomize.config.k8s.io/v1beta1/Kustomization', 'kustomize.config.k8s.io/v1alpha1/Component']);
const POLICY_KIND = 'sluice.dev/v1alpha1/SidecarPolicy';
const kindOf = (o: Json): string => `${String(o.apiVersion)}/${String(o.kind)}`;

const modelCache = new Map<string, Json>();
async function schemaProblems(o: Json): Promise<string[]> {
  const spec = MODELS[kindOf(o)];
  if (spec === undefined) return [`${kindOf(o)}: not a kind deploy/ may contain (known: ${Object.keys(MODELS).join(', ')})`];
  let mod = modelCache.get(spec);
  if (mod === undefined) {
    mod = (await import(spec)) as Json;
    modelCache.set(spec, mod);
  }
  const Model = mod[String(o.kind)] as new (data: unknown) => { validate(): void };
  try {
    new Model(o).validate();
  } catch (err) {
    return [(err as Error).message];
  }
  return [];
}

/**
 * Unknown fields and wrong types at any depth: every object becomes a literal typed by its
 * model's interface in one in-memory TypeScript module, and the compiler's excess-property
 * check names what the Kubernetes API would refuse in strict field validation.
 */
function typeProblems(docs: readonly Doc[]): Map<Doc, string[]> {
  const file = join(ROOT, 'test/integration/__deploy_models__.ts');
  const imports: string[] = [];
  const lines: string[] = [];
  const starts: { line: number; doc: Doc }[] = [];
  const typeNames = new Map<string, string>();
  let line = 0;
  for (const d of docs) {
    const spec = MODELS[kindOf(d.obj)];
    if (spec === undefined) continue;
    const key = `${spec}#${String(d.obj.kind)}`;
    let alias = typeNames.get(key);
    if (alias === undefined) {
      alias = `T${typeNames.size}`;
      typeNames.set(key, alias);
      imports.push(`import type { I${String(d.obj.kind)} as ${alias} } from '${spec}';`);
    }
    const body = `export const o${starts.length}: ${alias} = ${JSON.stringify(d.obj, null, 1)};`;
    starts.push({ line, doc: d });
    lines.push(body);
    line += body.split('\n').length;
  }
  const source = [...imports, ...lines].join('\n');
  const offset = imports.length;
  const host = ts.createCompilerHost({});
  const readFile0 = host.readFile.bind(host);
  const fileExists0 = host.fileExists.bind(host);
  host.readFile = (f) => (f === file ? source : readFile0(f));
  host.fileExists = (f) => f === file || fileExists0(f);
  const program = ts.createProgram(
    [file],
    { strict: true, noEmit: true, skipLibCheck: true, types: [], target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext },
    host,
  );
  const out = new Map<Doc, string[]>(docs.map((d) => [d, []]));
  for (const diag of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diag.messageText, ' ');
    if (diag.file === undefined || diag.start === undefined) throw new Error(`TypeScript: ${message}`);
    const at = diag.file.getLineAndCharacterOfPosition(diag.start).line - offset;
    if (at < 0) throw new Error(`TypeScript, in the imports: ${message}`);
    const owner = [...starts].reverse().find((s) => s.line <= at);
    if (owner === undefined) throw new Error(`TypeScript: ${message}`);
    out.get(owner.doc)?.push(message);
  }
  return out;
}

async function allProblems(docs: readonly Doc[]): Promise<string[]> {
  const types = typeProblems(docs);
  const problems: string[] = [];
  for (const d of docs) {
    for (const p of await schemaProblems(d.obj)) problems.push(`${d.where}: ${p}`);
    for (const p of types.get(d) ?? []) problems.push(`${d.where}: ${p}`);
    for (const p of k8sProblems(d.obj)) problems.push(`${d.where}: ${p}`);
    for (const p of sidecarPolicyProblems(d)) problems.push(`${d.where}: ${p}`);
  }
  return problems;
}

/** Policies inside ConfigMaps are parsed by sluice's own parser, as the sidecar will. */
function sidecarPolicyProblems(d: Doc): string[] {
  if (d.obj.kind !== 'ConfigMap' || typeof d.obj.data !== 'object' || d.obj.data === null) return [];
  const out: string[] = [];
  for (const [key, value] of Object.entries(d.obj.data as Record<string, string>)) {
    if (!/\.ya?ml$/.test(key) || !value.includes('kind: SidecarPolicy')) continue;
    const parsed = parsePolicy(value, `${d.where} data.${key}`);
    if (!parsed.ok) out.push(...parsed.errors.map(formatPolicyError));
  }
  return out;
}

// --- pods -----------------------------------------------------------------------------------

interface PodOf {
  readonly where: string;
  readonly namespace: string;
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
  readonly spec: Json;
}

function podsOf(docs: readonly Doc[]): PodOf[] {
  return docs
    .filter((d) => d.obj.kind === 'Deployment')
    .map((d) => {
      const template = (d.obj.spec as Json).template as Json;
      const meta = (template.metadata ?? {}) as Json;
      return {
        where: d.where,
        namespace: String((d.obj.metadata as Json).namespace ?? 'default'),
        labels: (meta.labels ?? {}) as Record<string, string>,
        annotations: (meta.annotations ?? {}) as Record<string, string>,
        spec: template.spec as Json,
      };
    });
}
const containersOf = (spec: Json): Json[] => [...((spec.initContainers ?? []) as Json[]), ...((spec.containers ?? []) as Json[])];
const selects = (selector: Record<string, string> | undefined, labels: Record<string, string>): boolean =>
  Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);

/** The shared conventions, and the restricted Pod Security Standard, for every container. */
function containerProblems(pods: readonly PodOf[]): string[] {
  const problems: string[] = [];
  for (const pod of pods) {
    const psc = (pod.spec.securityContext ?? {}) as Json;
    for (const f of ['hostNetwork', 'hostPID', 'hostIPC']) if (pod.spec[f] === true) problems.push(`${pod.where}: ${f}`);
    for (const v of (pod.spec.volumes ?? []) as Json[]) {
      const type = Object.keys(v).find((k) => k !== 'name');
      if (!['configMap', 'secret', 'emptyDir', 'downwardAPI', 'projected', 'persistentVolumeClaim', 'ephemeral', 'csi'].includes(String(type))) {
        problems.push(`${pod.where}: volume ${String(v.name)} is ${String(type)}, not allowed by the restricted Pod Security Standard`);
      }
    }
    for (const c of containersOf(pod.spec)) {
      const at = `${pod.where} container ${String(c.name)}`;
      const sc = (c.securityContext ?? {}) as Json;
      if (c.image !== IMAGE) problems.push(`${at}: image ${String(c.image)}, not ${IMAGE}`);
      const res = (c.resources ?? {}) as { requests?: Json; limits?: Json };
      if (res.requests?.cpu === undefined || res.requests.memory === undefined) problems.push(`${at}: resources.requests needs cpu and memory`);
      if (res.limits?.memory === undefined) problems.push(`${at}: resources.limits.memory is missing`);
      // A plain init container runs to completion and may have no probes; a native sidecar must.
      const runsToCompletion = ((pod.spec.initContainers ?? []) as Json[]).includes(c) && c.restartPolicy !== 'Always';
      if (!runsToCompletion && (c.readinessProbe === undefined || c.livenessProbe === undefined)) problems.push(`${at}: needs readinessProbe and livenessProbe`);
      if (c.restartPolicy === 'Always' && c.startupProbe === undefined) problems.push(`${at}: a native sidecar needs a startupProbe (the app starts when it passes)`);
      if (c.securityContext === undefined) problems.push(`${at}: no securityContext`);
      if (sc.allowPrivilegeEscalation !== false) problems.push(`${at}: allowPrivilegeEscalation must be false`);
      if (sc.readOnlyRootFilesystem !== true) problems.push(`${at}: readOnlyRootFilesystem must be true`);
      if (sc.privileged === true) problems.push(`${at}: privileged`);
      if (!((sc.capabilities as Json | undefined)?.drop as string[] | undefined)?.includes('ALL')) problems.push(`${at}: capabilities.drop must include ALL`);
      if (((sc.capabilities as Json | undefined)?.add as string[] | undefined)?.some((a) => a !== 'NET_BIND_SERVICE')) problems.push(`${at}: adds capabilities`);
      if ((sc.runAsNonRoot ?? psc.runAsNonRoot) !== true) problems.push(`${at}: runAsNonRoot must be true`);
      // runAsNonRoot can only verify a numeric user: the image's (1000) is pinned, never 0.
      const uid = sc.runAsUser ?? psc.runAsUser;
      if (typeof uid !== 'number' || uid === 0) problems.push(`${at}: runAsUser must be a non-zero number, got ${String(uid)}`);
      const seccomp = ((sc.seccompProfile ?? psc.seccompProfile) as Json | undefined)?.type;
      if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') problems.push(`${at}: seccompProfile must be RuntimeDefault`);
    }
  }
  return problems;
}

/** Named Service target ports exist in a selected pod; every selector selects something. */
function wiringProblems(docs: readonly Doc[], injectedPortsAllowed: boolean): string[] {
  const problems: string[] = [];
  const pods = podsOf(docs);
  const inNs = (d: Doc): PodOf[] => pods.filter((p) => p.namespace === String((d.obj.metadata as Json).namespace ?? 'default'));
  const portsOf = (p: PodOf): Json[] => containersOf(p.spec).flatMap((c) => (c.ports ?? []) as Json[]);
  for (const d of docs) {
    const spec = (d.obj.spec ?? {}) as Json;
    if (d.obj.kind === 'Service') {
      const selected = inNs(d).filter((p) => selects(spec.selector as Record<string, string>, p.labels));
      if (selected.length === 0) problems.push(`${d.where}: selects no pod`);
      for (const port of (spec.ports ?? []) as Json[]) {
        const target = port.targetPort ?? port.port;
        const found = selected.every((p) => portsOf(p).some((cp) => (typeof target === 'string' ? cp.name === target : cp.containerPort === target)));
        if (!found && !(injectedPortsAllowed && target === INBOUND_PORT_NAME)) problems.push(`${d.where}: targetPort ${String(target)} is no container port of the pods it selects`);
      }
    }
    if (d.obj.kind === 'PodDisruptionBudget') {
      const sel = (spec.selector as Json).matchLabels as Record<string, string>;
      if (!inNs(d).some((p) => selects(sel, p.labels))) problems.push(`${d.where}: selects no pod`);
    }
    if (d.obj.kind === 'NetworkPolicy') {
      const sel = ((spec.podSelector as Json).matchLabels ?? {}) as Record<string, string>;
      const selected = inNs(d).filter((p) => selects(sel, p.labels));
      if (selected.length === 0) problems.push(`${d.where}: selects no pod`);
      for (const rule of (spec.ingress ?? []) as Json[]) {
        for (const port of (rule.ports ?? []) as Json[]) {
          const injected = injectedPortsAllowed && (port.port === 15006 || port.port === 15000);
          if (!injected && !selected.some((p) => portsOf(p).some((cp) => cp.containerPort === port.port))) {
            problems.push(`${d.where}: ingress port ${String(port.port)} is no container port of the pods it selects`);
          }
        }
      }
    }
  }
  return problems;
}

// --- kustomize ------------------------------------------------------------------------------

async function kustomize(dir: string): Promise<Doc[]> {
  const { stdout } = await exec('kubectl', ['kustomize', dir], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024, timeout: 60_000 });
  return parseDocs(stdout, `kubectl kustomize ${relative(ROOT, dir)}`);
}

const KUSTOMIZATION_FIELDS = new Set(['apiVersion', 'kind', 'resources', 'components', 'patches', 'configMapGenerator', 'labels', 'namespace']);

/** What a kustomization names exists, and what it may not name it does not. */
function kustomizationProblems(file: string, k: Json): string[] {
  const dir = dirname(join(DEPLOY, file));
  const problems: string[] = [];
  for (const key of Object.keys(k)) if (!KUSTOMIZATION_FIELDS.has(key)) problems.push(`${file}: field ${key} is not one these kustomizations use`);
  const kindAt = (path: string): string | undefined => {
    const kf = join(path, 'kustomization.yaml');
    return existsSync(kf) ? String((parseDocs(readFileSync(kf, 'utf8'), kf)[0]?.obj ?? {}).kind) : undefined;
  };
  for (const r of (k.resources ?? []) as string[]) {
    const path = join(dir, r);
    if (!existsSync(path)) problems.push(`${file}: resource ${r} does not exist`);
    else if (statSync(path).isDirectory() && kindAt(path) !== 'Kustomization') problems.push(`${file}: resource ${r} is not a Kustomization`);
  }
  for (const c of (k.components ?? []) as string[]) if (kindAt(join(dir, c)) !== 'Component') problems.push(`${file}: component ${c} is not a Component`);
  for (const g of (k.configMapGenerator ?? []) as Json[]) {
    for (const f of (g.files ?? []) as string[]) if (!existsSync(join(dir, f.split('=').pop() as string))) problems.push(`${file}: generator file ${f} does not exist`);
  }
  return problems;
}

/** Files no kustomization includes: each is a standalone example, and says so in its comments. */
const STANDALONE = ['example/consumer-with-sidecar.yaml', 'example/policies/checkout.yaml', 'example/policies/orders.yaml'];

// --- metrics --------------------------------------------------------------------------------

/**
 * Metric families src/ declares: a `sluice_`/`http_` name as the first string argument of a call
 * (counter(registry, 'x', ...), a helper's perUpstream('x', ...)). Histograms (declared by a
 * histogram function) also have _bucket, _sum and _count series.
 */
function declaredMetrics(): Set<string> {
  const names = new Set<string>();
  for (const f of walk(join(ROOT, 'src')).filter((p) => p.endsWith('.ts'))) {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/\b([A-Za-z]\w*)(?:<[^>()]*>)?\(\s*(?:[\w.]+,\s*)?'((?:sluice|http)_[a-z0-9_]+)'/g)) {
      const [, fn, name] = m as unknown as [string, string, string];
      names.add(name);
      if (/histogram/i.test(fn)) for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    }
  }
  return names;
}
const METRICS = declaredMetrics();

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan', 'Inf', 'NaN']);

/** The metric names a PromQL expression reads: what is left once strings, matchers, ranges, grouping labels, functions and keywords are gone. */
function metricNamesIn(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    if (PROMQL_WORDS.has(m[0])) continue;
    if (s.slice((m.index ?? 0) + m[0].length).trimStart().startsWith('(')) continue;
    names.push(m[0]);
  }
  return names;
}

const RULES_FILE = 'monitoring/prometheus-rules.yaml';
const DASHBOARD_FILE = 'monitoring/dashboards/sluice.json';
const ruleGroups = (): Json[] => ((DOCS.get(RULES_FILE)?.[0]?.obj.spec as Json).groups ?? []) as Json[];
const dashboard = (): Json => JSON.parse(readFileSync(join(DEPLOY, DASHBOARD_FILE), 'utf8')) as Json;

// --- processes ------------------------------------------------------------------------------

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'sluice-deploy-'));
  dirs.push(d);
  return d;
}

/** Starts a command and resolves once a line of its output matches; the process is killed after the file's tests. */
function startUntil(cmd: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp, timeoutMs = 15_000): Promise<{ child: ChildProcess; line: string; output: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')}: no ${String(ready)} within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = (c: Buffer): void => {
      out += c.toString();
      const line = out.split('\n').find((l) => ready.test(l));
      if (line === undefined) return;
      clearTimeout(timer);
      resolve({ child, line, output: () => out });
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(' ')} exited ${String(code)}:\n${out}`));
    });
  });
}

function get(url: string, opts: https.RequestOptions = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? https : http).get(url, { ...opts, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: timeout`)));
    req.on('error', reject);
  });
}

function find(docs: readonly Doc[], kind: string, name: string): Json {
  const d = docs.find((x) => x.obj.kind === kind && (x.obj.metadata as Json).name === name);
  if (d === undefined) throw new Error(`no ${kind}/${name}`);
  return d.obj;
}
const containerOf = (deployment: Json, name: string): Json =>
  containersOf(((deployment.spec as Json).template as Json).spec as Json).find((c) => c.name === name) as Json;
const envOf = (c: Json): Record<string, string> => Object.fromEntries(((c.env ?? []) as Json[]).filter((e) => typeof e.value === 'string').map((e) => [String(e.name), String(e.value)]));

// --- the tests ------------------------------------------------------------------------------

const ALL_DOCS = [...DOCS.values()].flat();
const K8S_DOCS = ALL_DOCS.filter((d) => !KUSTOMIZE_KINDS.has(kindOf(d.obj)) && kindOf(d.obj) !== POLICY_KIND);

describe('deploy/: every file', () => {
  it('has only files this test knows how to check', () => {
    const unchecked = FILES.filter((f) => !/\.(ya?ml|json|md|mjs|sh)$/.test(f));
    expect(unchecked).toEqual([]);
  });

  it.each(YAML_FILES)('%s: every document is a known kind, valid against its schema, with no unknown field', async (file) => {
    const docs = DOCS.get(file) ?? [];
    expect(docs.length, `${file} has no document`).toBeGreaterThan(0);
    const problems: string[] = [];
    for (const d of docs) {
      const kind = kindOf(d.obj);
      if (KUSTOMIZE_KINDS.has(kind)) problems.push(...kustomizationProblems(file, d.obj));
      else if (kind === POLICY_KIND) {
        const parsed = parsePolicy(d.text, `deploy/${file}`);
        if (!parsed.ok) problems.push(...parsed.errors.map(formatPolicyError));
      } else if (MODELS[kind] === undefined) problems.push(`${d.where}: ${kind} is not a kind deploy/ may contain`);
    }
    problems.push(...(await allProblems(docs.filter((d) => MODELS[kindOf(d.obj)] !== undefined))));
    expect(problems).toEqual([]);
  });

  it('the schema checks catch what they should (a typo, a wrong type, an unknown kind)', async () => {
    const good = find(K8S_DOCS, 'Deployment', 'sluice-control');
    const typo = structuredClone(good);
    const c = containerOf(typo, 'control');
    c.readinesProbe = c.readinessProbe;
    const wrongType = structuredClone(good);
    (containerOf(wrongType, 'control').ports as Json[])[0] = { name: 'grpc', containerPort: '15012' };
    const problems = await allProblems([
      { where: 'typo', obj: typo, text: '' },
      { where: 'type', obj: wrongType, text: '' },
    ]);
    expect(problems.some((p) => p.startsWith('typo:') && p.includes('readinesProbe'))).toBe(true);
    expect(problems.some((p) => p.startsWith('type:') && p.includes('containerPort'))).toBe(true);
    expect(await schemaProblems({ apiVersion: 'apps/v1', kind: 'DaemonSet' })).toEqual([expect.stringContaining('not a kind deploy/ may contain')]);
  });

  it('every manifest file is part of a kustomization, or a standalone example', () => {
    const included = new Set<string>();
    for (const [file, docs] of DOCS) {
      for (const d of docs) {
        if (!KUSTOMIZE_KINDS.has(kindOf(d.obj))) continue;
        for (const r of (d.obj.resources ?? []) as string[]) included.add(relative(DEPLOY, join(DEPLOY, dirname(file), r)));
      }
    }
    const manifests = YAML_FILES.filter((f) => !f.endsWith('kustomization.yaml'));
    expect(manifests.filter((f) => !included.has(f) && !STANDALONE.includes(f))).toEqual([]);
  });

  it('every container: the shared image, resources, probes, and the restricted Pod Security Standard', () => {
    const pods = podsOf(K8S_DOCS);
    expect(pods.length).toBeGreaterThanOrEqual(5);
    expect(containerProblems(pods)).toEqual([]);
  });

  it('the example policies are one valid policy set, and the hand-wired example runs apps/consumer.mjs', () => {
    const files = YAML_FILES.filter((f) => f.startsWith('example/policies/')).map((f) => ({ path: f, text: readFileSync(join(DEPLOY, f), 'utf8') }));
    const set = buildPolicySet('HEAD', files);
    expect(set.ok ? [] : set.errors).toEqual([]);
    const cm = find(DOCS.get('example/consumer-with-sidecar.yaml') ?? [], 'ConfigMap', 'orders-sluice');
    expect((cm.data as Json)['consumer.mjs']).toBe(readFileSync(join(DEPLOY, 'example/apps/consumer.mjs'), 'utf8'));
  });
});

describe.each([
  ['deploy', false],
  ['deploy/overlays/full', false],
  ['deploy/example', true],
])('kubectl kustomize %s', (dir, example) => {
  let built: Doc[] = [];
  beforeAll(async () => {
    if (KUBECTL) built = await kustomize(join(ROOT, dir));
  });

  it.skipIf(!KUBECTL)(`builds, and what it builds is valid, with no unknown field${NO_KUBECTL}`, async () => {
    expect(built.length).toBeGreaterThan(0);
    expect(await allProblems(built)).toEqual([]);
  });

  it.skipIf(!KUBECTL)(`every container keeps the conventions, and every selector and port is wired${NO_KUBECTL}`, () => {
    expect(containerProblems(podsOf(built))).toEqual([]);
    expect(wiringProblems(built, example)).toEqual([]);
  });

  it.skipIf(!KUBECTL)(`holds what it should${NO_KUBECTL}`, () => {
    const names = built.map((d) => `${String(d.obj.kind)}/${String((d.obj.metadata as Json).name)}`);
    const crds = built.filter((d) => CRD_GROUPS.some((g) => kindOf(d.obj).startsWith(g)));
    if (dir === 'deploy') {
      expect(names).toEqual(
        expect.arrayContaining(['Namespace/sluice-system', 'Deployment/sluice-control', 'Service/sluice-control', 'ConfigMap/sluice-control-repo', 'Deployment/sluice-webhook', 'Service/sluice-webhook', 'MutatingWebhookConfiguration/sluice-sidecar-injector']),
      );
      // Applies to a cluster with no CRDs installed, and holds no Secret to overwrite a real one.
      expect(crds.map((d) => d.where)).toEqual([]);
      expect(names.filter((n) => n.startsWith('Secret/'))).toEqual([]);
    } else if (dir === 'deploy/overlays/full') {
      expect(names).toEqual(expect.arrayContaining(['PodMonitor/sluice-sidecars', 'ServiceMonitor/sluice-control', 'PrometheusRule/sluice', 'Certificate/sluice-webhook', 'ConfigMap/sluice-grafana-dashboard']));
      const mwc = find(built, 'MutatingWebhookConfiguration', 'sluice-sidecar-injector');
      expect((mwc.metadata as Json).annotations).toEqual({ 'cert-manager.io/inject-ca-from': 'sluice-system/sluice-webhook' });
      const cm = find(built, 'ConfigMap', 'sluice-grafana-dashboard');
      expect((cm.metadata as Json).labels).toMatchObject({ grafana_dashboard: '1' });
      expect(JSON.parse((cm.data as Json)['sluice.json'] as string)).toEqual(dashboard());
      // The serving certificate names the Service the webhook configuration calls.
      const cert = find(built, 'Certificate', 'sluice-webhook').spec as Json;
      expect(cert.secretName).toBe('sluice-webhook-tls');
      expect(cert.dnsNames).toContain('sluice-webhook.sluice-system.svc');
    } else {
      expect(names).toEqual(expect.arrayContaining(['Namespace/sluice-example', 'Deployment/orders', 'Deployment/checkout', 'Service/orders']));
      expect(((find(built, 'Namespace', 'sluice-example').metadata as Json).labels as Json)['sluice.dev/injection']).toBe('enabled');
    }
  });
});

describe('an overlay of your own, as deploy/README.md and the quick start write it', () => {
  it.skipIf(!KUBECTL)(`replaces the policy repository and adds the cert-manager component${NO_KUBECTL}`, async () => {
    const dir = await tempDir();
    const deploy = relative(dir, DEPLOY);
    await writeFile(
      join(dir, 'kustomization.yaml'),
      stringify({
        apiVersion: 'kustomize.config.k8s.io/v1beta1',
        kind: 'Kustomization',
        resources: [deploy],
        components: [`${deploy}/webhook/cert-manager`],
        configMapGenerator: [
          { name: 'sluice-control-repo', namespace: 'sluice-system', behavior: 'replace', options: { disableNameSuffixHash: true }, literals: ['repo=git@git.example.com:platform/policies.git', 'branch=prod'] },
        ],
      }),
    );
    const built = await kustomize(dir);
    expect(find(built, 'ConfigMap', 'sluice-control-repo').data).toEqual({ repo: 'git@git.example.com:platform/policies.git', branch: 'prod' });
    expect(built.filter((d) => d.obj.kind === 'Certificate')).toHaveLength(2);
    expect(await allProblems(built)).toEqual([]);
  });
});

describe('the shared names', () => {
  it('sluice control: 2 replicas, a PDB, Service ports grpc 15012 and http-api 15014, probes on the API port', () => {
    const d = find(K8S_DOCS, 'Deployment', 'sluice-control');
    expect((d.spec as Json).replicas).toBe(2);
    expect((find(K8S_DOCS, 'PodDisruptionBudget', 'sluice-control').spec as Json).minAvailable).toBe(1);
    const svc = find(K8S_DOCS, 'Service', 'sluice-control');
    expect(((svc.spec as Json).ports as Json[]).map((p) => [p.name, p.port])).toEqual([['grpc', 15012], ['http-api', 15014]]);
    const c = containerOf(d, 'control');
    expect([(c.readinessProbe as Json).httpGet, (c.livenessProbe as Json).httpGet]).toEqual([{ path: '/readyz', port: 'http-api' }, { path: '/healthz', port: 'http-api' }]);
    // Every configMapKeyRef names a key the ConfigMap has.
    const repo = find(K8S_DOCS, 'ConfigMap', 'sluice-control-repo').data as Json;
    for (const e of (c.env ?? []) as Json[]) {
      const ref = (e.valueFrom as Json | undefined)?.configMapKeyRef as Json | undefined;
      if (ref !== undefined) expect(repo[String(ref.key)], `${String(e.name)} <- ${String(ref.key)}`).toBeTypeOf('string');
    }
  });

  it('sluice webhook: Service 443 -> 15443, called at /inject, failing open, on labelled namespaces, no caBundle to overwrite', () => {
    const d = find(K8S_DOCS, 'Deployment', 'sluice-webhook');
    const c = containerOf(d, 'webhook');
    expect(c.ports).toEqual([{ name: 'https', containerPort: 15443 }]);
    expect(((find(K8S_DOCS, 'Service', 'sluice-webhook').spec as Json).ports as Json[])[0]).toMatchObject({ port: 443, targetPort: 'https' });
    const hook = ((find(K8S_DOCS, 'MutatingWebhookConfiguration', 'sluice-sidecar-injector').webhooks ?? []) as Json[])[0] as Json;
    expect(hook.clientConfig).toEqual({ service: { name: 'sluice-webhook', namespace: 'sluice-system', path: '/inject', port: 443 } });
    expect(hook.failurePolicy).toBe('Ignore');
    expect(hook.namespaceSelector).toEqual({ matchLabels: { 'sluice.dev/injection': 'enabled' } });
    // sluice's own pods opt out by label; its namespace is not enabled.
    for (const name of ['sluice-control', 'sluice-webhook']) {
      const labels = (((find(K8S_DOCS, 'Deployment', name).spec as Json).template as Json).metadata as Json).labels as Json;
      expect(labels['sluice.dev/inject']).toBe('false');
    }
    expect(((find(K8S_DOCS, 'Namespace', 'sluice-system').metadata as Json).labels as Json)['sluice.dev/injection']).toBe('disabled');
    expect(hook.clientConfig as Json).not.toHaveProperty('caBundle');
  });

  it('the monitors scrape the ports that exist: the injected sidecar admin port, the control Service port', () => {
    const pm = find(K8S_DOCS, 'PodMonitor', 'sluice-sidecars').spec as Json;
    expect((pm.podMetricsEndpoints as Json[]).map((e) => e.port)).toEqual([ADMIN_PORT_NAME]);
    const sm = find(K8S_DOCS, 'ServiceMonitor', 'sluice-control').spec as Json;
    const svc = find(K8S_DOCS, 'Service', 'sluice-control');
    expect(selects((sm.selector as Json).matchLabels as Record<string, string>, (svc.metadata as Json).labels as Record<string, string>)).toBe(true);
    expect(((svc.spec as Json).ports as Json[]).map((p) => p.name)).toContain((sm.endpoints as Json[])[0]?.port);
  });
});

describe('the commands in the Deployments run as written', () => {
  it('sluice control starts with the Deployment\'s args and env, and answers its probes', async () => {
    const d = find(K8S_DOCS, 'Deployment', 'sluice-control');
    const c = containerOf(d, 'control');
    const dir = await tempDir();
    const repo = await policyRepo();
    dirs.push(repo.dir);
    await repo.commit(Object.fromEntries(['checkout.yaml', 'orders.yaml'].map((f) => [f, readFileSync(join(DEPLOY, 'example/policies', f), 'utf8')])));
    await writeFile(join(dir, 'token'), 'a-token\n');
    const vars: Record<string, string> = { SLUICE_CONTROL_REPO: repo.dir, SLUICE_CONTROL_BRANCH: 'main' };
    const args = (c.args as string[]).map((a) =>
      a
        .replace(/^\$\((\w+)\)$/, (_, v: string) => vars[v] ?? a)
        .replace('/etc/sluice/token/token', join(dir, 'token'))
        .replace('/var/lib/sluice/mirror', join(dir, 'mirror'))
        .replace(/^1501[24]$/, '0'),
    );
    expect(args.some((a) => a.includes('/etc/') || a.includes('$('))).toBe(false);
    const run = await startUntil(process.execPath, ['src/main.ts', ...args], {}, /^\{"grpcPort":\d+,"apiPort":\d+\}$/);
    const { apiPort } = JSON.parse(run.line) as { apiPort: number };
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      const path = String(((c[probe] as Json).httpGet as Json).path);
      await eventually(`${probe} ${path} 200`, async () => (await get(`http://127.0.0.1:${apiPort}${path}`)).status === 200, 10_000);
    }
    const metrics = await get(`http://127.0.0.1:${apiPort}/metrics`);
    expect(metrics.body).toContain('sluice_control_commit_info');
    run.child.kill('SIGTERM');
  });

  it.skipIf(!OPENSSL)(`gen-webhook-tls.sh makes a certificate sluice webhook serves to a client that trusts only its CA${NO_OPENSSL}`, async () => {
    const dir = await tempDir();
    const { stdout } = await exec('bash', [join(DEPLOY, 'webhook/gen-webhook-tls.sh'), '--out', dir], { timeout: 30_000 });
    expect(stdout).toContain('kubectl patch mutatingwebhookconfiguration sluice-sidecar-injector');
    const c = containerOf(find(K8S_DOCS, 'Deployment', 'sluice-webhook'), 'webhook');
    const args = (c.args as string[]).map((a) => a.replace('/etc/sluice/webhook-tls', dir).replace(/^15443$/, '0'));
    const run = await startUntil(process.execPath, ['src/main.ts', ...args], {}, /sluice webhook started/);
    const port = (JSON.parse(run.line) as { port: number }).port;
    const ca = await readFile(join(dir, 'ca.crt'));
    const probe = (c.readinessProbe as Json).httpGet as Json;
    expect(probe.scheme).toBe('HTTPS');
    // As the API server calls it: by the Service's DNS name, verifying the chain.
    const r = await get(`https://127.0.0.1:${port}${String(probe.path)}`, { ca, servername: 'sluice-webhook.sluice-system.svc' });
    expect(r.status).toBe(200);
    run.child.kill('SIGTERM');
  });

  it('the git credential helper in the control Deployment answers git from the credentials file', async () => {
    const env = envOf(containerOf(find(K8S_DOCS, 'Deployment', 'sluice-control'), 'control'));
    const dir = await tempDir();
    await writeFile(join(dir, 'git-credentials'), 'https://sluice-bot:s3cret@git.example.com\n');
    const helperEnv = {
      GIT_CONFIG_COUNT: env.GIT_CONFIG_COUNT,
      GIT_CONFIG_KEY_0: env.GIT_CONFIG_KEY_0,
      GIT_CONFIG_VALUE_0: String(env.GIT_CONFIG_VALUE_0).replace('/etc/sluice/git', dir),
      GIT_TERMINAL_PROMPT: '0',
    };
    const fill = (host: string) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn('git', ['credential', 'fill'], { env: { ...process.env, ...helperEnv }, stdio: ['pipe', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (b: Buffer) => (out += b.toString()));
        child.once('close', (code) => resolve({ code, out }));
        child.stdin.end(`protocol=https\nhost=${host}\n\n`);
      });
    expect((await fill('git.example.com')).out).toContain('username=sluice-bot\npassword=s3cret\n');
    // Another host: no credential, and no prompt either (git fails at once).
    expect((await fill('other.example.com')).code).not.toBe(0);
  });

  it.skipIf(!SSH)(`GIT_SSH_COMMAND in the control Deployment is an ssh command line ssh accepts${NO_SSH}`, async () => {
    const env = envOf(containerOf(find(K8S_DOCS, 'Deployment', 'sluice-control'), 'control'));
    const dir = await tempDir();
    await writeFile(join(dir, 'ssh-privatekey'), '');
    await writeFile(join(dir, 'known_hosts'), '');
    const [cmd, ...args] = String(env.GIT_SSH_COMMAND).replaceAll('/etc/sluice/git', dir).split(/\s+/);
    expect(cmd).toBe('ssh');
    // -G prints the configuration it would use and connects to nothing.
    const { stdout } = await exec('ssh', ['-G', ...args, 'git.example.com'], { timeout: 10_000 });
    expect(stdout).toMatch(/^stricthostkeychecking (yes|true)$/m);
    expect(stdout).toContain(`userknownhostsfile ${dir}/known_hosts`);
    expect(stdout).toContain(`identityfile ${dir}/ssh-privatekey`);
    expect(stdout).toMatch(/^batchmode yes$/m);
    expect(stdout).toMatch(/^identitiesonly yes$/m);
  });
});

describe('the example, injected', () => {
  let injected: Doc[] = [];
  beforeAll(async () => {
    if (!KUBECTL) return;
    const dir = await tempDir();
    const file = join(dir, 'example.yaml');
    await writeFile(file, (await kustomize(join(ROOT, 'deploy/example'))).map((d) => stringify(d.obj)).join('---\n'));
    const r = await runCli(['inject', '-q', file]);
    if (r.code !== 0) throw new Error(`sluice inject: exit ${String(r.code)}\n${r.stderr}`);
    injected = parseDocs(r.stdout, 'sluice inject deploy/example');
  });

  it.skipIf(!KUBECTL)(`sluice inject adds a sidecar to both apps, and the result is valid and keeps every convention${NO_KUBECTL}`, async () => {
    const pods = podsOf(injected);
    expect(pods.map((p) => containersOf(p.spec).map((c) => c.name))).toEqual([['sluice', 'app'], ['sluice', 'app']]);
    expect(await allProblems(injected)).toEqual([]);
    expect(containerProblems(pods)).toEqual([]);
    // Now every named port exists: the Services reach the sidecar's inbound port, the
    // NetworkPolicy's ports are container ports, the PodMonitor finds its port on both pods.
    expect(wiringProblems(injected, false)).toEqual([]);
    for (const p of pods) expect(containersOf(p.spec).flatMap((c) => ((c.ports ?? []) as Json[]).map((x) => x.name))).toContain(ADMIN_PORT_NAME);
  });

  it('its apps talk through a real sidecar: checkout -> outbound -> inbound -> orders', async () => {
    // Ports of 0, read back from the apps' log lines: a port picked free beforehand can be taken
    // by a parallel test before the app gets to listen on it.
    const consumer = await startUntil(process.execPath, [join(DEPLOY, 'example/apps/consumer.mjs')], { PORT: '0', HEALTH_PORT: '0', FAIL_RATIO: '0', LATENCY_MS: '1' }, /orders listening/);
    const listening = JSON.parse(consumer.line) as { app: string; health: string };
    const [appPort, healthA] = [listening.app, listening.health].map((a) => Number(a.slice(a.lastIndexOf(':') + 1)));
    expect((await get(`http://127.0.0.1:${healthA}/healthz`)).status).toBe(200);
    // Two sidecars, as in two pods: the consumer's in front of orders, the producer's for its calls.
    const inbound = await startCliProxy(['--app-port', String(appPort), '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0']);
    children.push(inbound.child);
    const outbound = await startCliProxy(['--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0']);
    children.push(outbound.child);
    const producer = await startUntil(
      process.execPath,
      [join(DEPLOY, 'example/apps/producer.mjs')],
      {
        TARGET: `http://127.0.0.1:${inbound.inboundPort}/orders`,
        HTTP_PROXY: `http://127.0.0.1:${outbound.outboundPort}`,
        NO_PROXY: '',
        NODE_USE_ENV_PROXY: '1',
        RATE: '50',
        REPORT_MS: '300',
        HEALTH_PORT: '0',
      },
      /"200":\s*[1-9]/,
    );
    expect(producer.line).toContain('answers in the last');
    // Each sidecar counted the requests on its side: the proxy variables were honoured, and the
    // requests were forwarded one by one (a CONNECT tunnel would not be counted per request).
    const ok = async (port: number, family: string): Promise<number> =>
      [...(await get(`http://127.0.0.1:${port}/metrics`)).body.matchAll(new RegExp(`^${family}\\{[^}]*http_response_status_code="200"[^}]*\\} (\\d+)`, 'gm'))].reduce((sum, m) => sum + Number(m[1]), 0);
    expect(await ok(outbound.adminPort, 'http_server_request_duration_seconds_count')).toBeGreaterThan(0);
    expect(await ok(inbound.adminPort, 'http_server_request_duration_seconds_count')).toBeGreaterThan(0);
    producer.child.kill('SIGTERM');
    await Promise.all([inbound.stop(), outbound.stop()]);
  });
});

describe('alert rules and the dashboard', () => {
  it('every alert has an expression, a severity and a summary, and reads only metrics src/ declares', () => {
    const rules = ruleGroups().flatMap((g) => (g.rules ?? []) as Json[]);
    expect(rules.length).toBeGreaterThanOrEqual(10);
    const problems: string[] = [];
    for (const r of rules) {
      if (typeof r.alert !== 'string' || typeof r.expr !== 'string') problems.push(`${JSON.stringify(r).slice(0, 60)}: alert and expr are required`);
      if (!['critical', 'warning', 'info'].includes(String((r.labels as Json | undefined)?.severity))) problems.push(`${String(r.alert)}: severity`);
      if (typeof (r.annotations as Json | undefined)?.summary !== 'string') problems.push(`${String(r.alert)}: summary`);
      const names = metricNamesIn(String(r.expr));
      if (names.length === 0) problems.push(`${String(r.alert)}: reads no metric`);
      for (const n of names) if (!METRICS.has(n)) problems.push(`${String(r.alert)}: ${n} is not declared in src/`);
    }
    expect(problems).toEqual([]);
  });

  it('the metric-name check finds names, and only names', () => {
    expect(metricNamesIn('sum by (upstream, le) (rate(http_client_request_duration_seconds_bucket{namespace=~"$namespace", le!="+Inf"}[$__rate_interval]))')).toEqual([
      'http_client_request_duration_seconds_bucket',
    ]);
    expect(metricNamesIn('max by (a) (avg_over_time(x_total{state="open"}[10m])) > 0.5 and on (a) y == 0 offset 5m')).toEqual(['x_total', 'y']);
    expect(METRICS.has('sluice_control_commit_info') && METRICS.has('sluice_credits_granted') && METRICS.has('sluice_control_ack_seconds_bucket')).toBe(true);
    expect(METRICS.has('http_response_status_code')).toBe(false);
  });

  it.skipIf(!PROMTOOL)(`promtool check rules accepts the PrometheusRule's groups${NO_PROMTOOL}`, async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'rules.yaml'), stringify({ groups: ruleGroups() }));
    const { stdout } = await exec('promtool', ['check', 'rules', join(dir, 'rules.yaml')], { timeout: 30_000 });
    expect(stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it.skipIf(!PROMTOOL)(`the alerts fire on the series they are about (promtool test rules)${NO_PROMTOOL}`, async () => {
    const dir = await tempDir();
    // Annotations are texts for people; what is tested is which alert fires, when, with which labels.
    const groups = ruleGroups().map((g) => ({ ...g, rules: ((g.rules ?? []) as Json[]).map(({ annotations: _, ...r }) => r) }));
    await writeFile(join(dir, 'rules.yaml'), stringify({ groups }));
    const side = 'namespace="shop",app="checkout",pod="checkout-1"';
    const tests = {
      rule_files: ['rules.yaml'],
      evaluation_interval: '1m',
      tests: [
        {
          interval: '1m',
          input_series: [
            { series: 'sluice_control_commit_info{namespace="sluice-system",pod="control-1",commit="abc123",state="rejected"}', values: '1x10' },
            { series: `sluice_control_connected{${side}}`, values: '1 1 0x10' },
            { series: `sluice_retries_refused_total{${side},direction="outbound",upstream="orders",why="budget"}`, values: '0+10x30' },
            // Open, with a short half-open probe every 5 minutes: still "open for long". (route="",
            // the upstream-wide breaker, is no label at all to Prometheus.)
            { series: `sluice_circuit_breaker_state{${side},upstream="orders",route="",state="open"}`, values: '1 1 1 1 0 1 1 1 1 0 1 1 1 1 0 1 1 1 1 0 1 1 1 1' },
            { series: `sluice_control_answers_total{namespace="sluice-system",pod="control-1",result="nack"}`, values: '0 0 1 1 1' },
            // Per minute: orders answers 2 of 102 requests with 503 (its tries fail far more, but
            // retries hide that from callers: no alert); payments 20 of 100, 10 more refused for
            // want of credit; the app answers 10 of 100 inbound requests with 500.
            { series: `http_server_request_duration_seconds_count{${side},direction="outbound",upstream="orders",route="default",http_request_method="GET",http_response_status_code="200"}`, values: '0+100x30' },
            { series: `http_server_request_duration_seconds_count{${side},direction="outbound",upstream="orders",route="default",http_request_method="GET",http_response_status_code="503"}`, values: '0+2x30' },
            { series: `http_client_request_duration_seconds_count{${side},direction="outbound",upstream="orders",route="default",http_request_method="GET",http_response_status_code="503"}`, values: '0+60x30' },
            { series: `http_server_request_duration_seconds_count{${side},direction="outbound",upstream="payments",route="default",http_request_method="POST",http_response_status_code="200"}`, values: '0+80x30' },
            { series: `http_server_request_duration_seconds_count{${side},direction="outbound",upstream="payments",route="default",http_request_method="POST",http_response_status_code="503"}`, values: '0+20x30' },
            { series: `sluice_credit_refusals_total{${side},upstream="payments"}`, values: '0+10x30' },
            { series: `http_server_request_duration_seconds_count{${side},direction="inbound",upstream="app",route="default",http_request_method="GET",http_response_status_code="200"}`, values: '0+90x30' },
            { series: `http_server_request_duration_seconds_count{${side},direction="inbound",upstream="app",route="default",http_request_method="GET",http_response_status_code="500"}`, values: '0+10x30' },
          ],
          alert_rule_test: [
            { eval_time: '3m', alertname: 'SluiceCommitRejected', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'sluice-system', commit: 'abc123' } }] },
            { eval_time: '5m', alertname: 'SluiceControlDisconnected', exp_alerts: [] },
            { eval_time: '8m', alertname: 'SluiceControlDisconnected', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', app: 'checkout', pod: 'checkout-1' } }] },
            { eval_time: '20m', alertname: 'SluiceRetryBudgetExhausted', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', app: 'checkout', upstream: 'orders' } }] },
            { eval_time: '20m', alertname: 'SluiceCircuitBreakerOpen', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', app: 'checkout', upstream: 'orders' } }] },
            { eval_time: '4m', alertname: 'SluicePolicyNacked', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'sluice-system' } }] },
            { eval_time: '20m', alertname: 'SluiceUpstreamErrorRate', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', app: 'checkout', upstream: 'payments' } }] },
            { eval_time: '20m', alertname: 'SluiceCreditsStarved', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', app: 'checkout', upstream: 'payments' } }] },
            { eval_time: '20m', alertname: 'SluiceInboundErrorRate', exp_alerts: [{ exp_labels: { severity: 'warning', namespace: 'shop', app: 'checkout' } }] },
            { eval_time: '8m', alertname: 'SluiceInboundErrorRate', exp_alerts: [] },
          ],
        },
      ],
    };
    await writeFile(join(dir, 'tests.yaml'), stringify(tests));
    const r = await exec('promtool', ['test', 'rules', join(dir, 'tests.yaml')], { cwd: dir, timeout: 30_000 }).catch((err: { stdout?: string; stderr?: string }) => {
      throw new Error(`promtool test rules failed:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    });
    expect(r.stdout).toContain('SUCCESS');
  });

  it('the Grafana dashboard parses, lays out in 24 columns, and its queries read only metrics src/ declares', () => {
    const dash = dashboard();
    expect(dash.uid).toBe('sluice-overview');
    const panels = (dash.panels ?? []) as Json[];
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const problems: string[] = [];
    const queries: [string, string][] = [];
    for (const p of panels) {
      const g = p.gridPos as { x: number; w: number; h: number; y: number };
      if (!(g.x >= 0 && g.w > 0 && g.x + g.w <= 24)) problems.push(`${String(p.title)}: gridPos ${JSON.stringify(g)}`);
      if (p.type === 'row') continue;
      if ((p.datasource as Json | undefined)?.uid !== '${datasource}') problems.push(`${String(p.title)}: datasource is not the dashboard's variable`);
      const targets = (p.targets ?? []) as Json[];
      if (targets.length === 0) problems.push(`${String(p.title)}: no query`);
      for (const t of targets) queries.push([String(p.title), String(t.expr)]);
    }
    for (const v of ((dash.templating as Json).list ?? []) as Json[]) {
      const q = typeof v.query === 'object' && v.query !== null ? String((v.query as Json).query) : String(v.query);
      const m = /^label_values\((.*),\s*\w+\)$/.exec(q);
      if (m !== null) queries.push([`variable ${String(v.name)}`, m[1] as string]);
    }
    expect(queries.length).toBeGreaterThanOrEqual(30);
    for (const [where, expr] of queries) {
      const names = metricNamesIn(expr);
      if (names.length === 0) problems.push(`${where}: reads no metric: ${expr}`);
      for (const n of names) if (!METRICS.has(n)) problems.push(`${where}: ${n} is not declared in src/`);
    }
    expect(problems).toEqual([]);
    // Every panel of the resilience layers is there: one family of each.
    const all = queries.map(([, e]) => e).join('\n');
    for (const family of ['sluice_retries_total', 'sluice_retry_budget_available', 'sluice_circuit_breaker_state', 'sluice_credits_available', 'sluice_admission_shed_total', 'sluice_control_answers_total', 'http_server_request_duration_seconds_bucket']) {
      expect(all, family).toContain(family);
    }
  });
});

