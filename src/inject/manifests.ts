// `sluice inject` on a YAML stream: every document in, every document out, in order. A document
// injection does not change is written back byte for byte (its source text), so comments and
// layout survive, and a second run over the output is the identity. A changed document gets the
// same JSON Patch the webhook would answer, applied to its parsed YAML in place.
import { Document, isMap, isNode, LineCounter, parseAllDocuments } from 'yaml';
import { InjectError } from './errors.ts';
import { deepEqual, diff } from './json-patch.ts';
import { INBOUND_PORT_NAME } from './sidecar.ts';
import { describeObject, injectWorkload, WORKLOAD_KINDS, type WorkloadOptions } from './workloads.ts';
import { applyToDocument } from './yaml-patch.ts';

type Json = Record<string, unknown>;

export interface DocumentReport {
  /** 1-based, in its file. */
  readonly index: number;
  /** `Deployment orders`. */
  readonly what: string;
  readonly outcome: 'injected' | 'skipped' | 'ignored';
  readonly message: string;
  /** A skip the user probably did not mean, or a note worth reading. */
  readonly warn: boolean;
}

export interface StreamResult {
  readonly text: string;
  readonly reports: readonly DocumentReport[];
  /** `file: document 2 (Deployment orders): reason`; with any, text must not be used. */
  readonly errors: readonly string[];
  /** Services in the stream whose traffic would bypass an injected sidecar. */
  readonly warnings: readonly string[];
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** What an injected pod answers on, for checking Services against it. */
interface InjectedPod {
  readonly what: string;
  readonly labels: Readonly<Record<string, unknown>>;
  readonly appPort: number;
  readonly appPortNames: ReadonlySet<string>;
}

interface Injected {
  readonly object: unknown;
  readonly pods: InjectedPod[];
  readonly reports: { what: string; outcome: DocumentReport['outcome']; message: string; warn: boolean }[];
}

function podOf(obj: Json): Json | undefined {
  let node: unknown = obj;
  const kind = obj.kind as string;
  for (const key of (Object.hasOwn(WORKLOAD_KINDS, kind) ? WORKLOAD_KINDS[kind]?.template : undefined) ?? []) node = isObject(node) ? node[key] : undefined;
  return isObject(node) ? node : undefined;
}

/** One object, or each item of a `kind: List` (what `kubectl get -o yaml` prints). */
function injectObject(value: unknown, o: WorkloadOptions): Injected {
  if (isObject(value) && value.kind === 'List' && value.apiVersion === 'v1' && Array.isArray(value.items)) {
    const parts = value.items.map((item) => injectObject(item, o));
    const changed = parts.some((p, i) => p.object !== (value.items as unknown[])[i]);
    return {
      object: changed ? { ...value, items: parts.map((p) => p.object) } : value,
      pods: parts.flatMap((p) => p.pods),
      reports: parts.flatMap((p) => p.reports),
    };
  }
  const what = describeObject(value);
  let r;
  try {
    r = injectWorkload(value, o);
  } catch (err) {
    if (err instanceof InjectError) throw new InjectError(err.code, `${what}: ${err.message}`);
    throw err;
  }
  if (r.kind === 'ignored') return { object: value, pods: [], reports: [{ what, outcome: 'ignored', message: 'not a workload', warn: false }] };
  if (r.kind === 'skipped') return { object: value, pods: [], reports: [{ what, outcome: 'skipped', message: r.reason, warn: r.warn }] };
  const pods: InjectedPod[] = [];
  const pod = podOf(r.object);
  if (r.options.appPort !== undefined && pod !== undefined) {
    const spec = isObject(pod.spec) ? pod.spec : {};
    const names = new Set<string>();
    for (const c of Array.isArray(spec.containers) ? spec.containers : []) {
      for (const p of isObject(c) && Array.isArray(c.ports) ? c.ports : []) {
        if (isObject(p) && p.containerPort === r.options.appPort && typeof p.name === 'string') names.add(p.name);
      }
    }
    const meta = isObject(pod.metadata) ? pod.metadata : {};
    pods.push({ what, labels: isObject(meta.labels) ? meta.labels : {}, appPort: r.options.appPort, appPortNames: names });
  }
  const message = ['injected', ...r.notes].join('; ');
  return { object: r.object, pods, reports: [{ what, outcome: 'injected', message, warn: false }] };
}

/** Services selecting an injected pod but targeting its app port: their traffic skips sluice. */
function bypassingServices(services: readonly Json[], pods: readonly InjectedPod[]): string[] {
  const out: string[] = [];
  for (const svc of services) {
    const spec = isObject(svc.spec) ? svc.spec : {};
    const selector = isObject(spec.selector) ? spec.selector : undefined;
    if (selector === undefined || Object.keys(selector).length === 0) continue;
    for (const pod of pods) {
      if (!Object.entries(selector).every(([k, v]) => pod.labels[k] === v)) continue;
      for (const p of Array.isArray(spec.ports) ? spec.ports : []) {
        if (!isObject(p)) continue;
        const target = p.targetPort ?? p.port;
        if (target === pod.appPort || (typeof target === 'string' && pod.appPortNames.has(target))) {
          out.push(
            `${describeObject(svc)} port ${String(p.name ?? p.port)} targets ${JSON.stringify(target)}, the app's own port in ${pod.what}: ` +
              `its traffic bypasses sluice; set targetPort: ${INBOUND_PORT_NAME}`,
          );
        }
      }
    }
  }
  return out;
}

/** A comment opening the document: the document's, or (with no blank line after it) its first key's. */
function leadingComment(doc: Document): string | null {
  const contents = doc.contents;
  const first = isMap(contents) ? contents.items[0]?.key : undefined;
  const parts = [doc.commentBefore, isNode(contents) ? contents.commentBefore : undefined, isNode(first) ? first.commentBefore : undefined];
  return parts.filter((c): c is string => typeof c === 'string' && c !== '').join('\n') || null;
}

function rewrite(doc: Document, before: unknown, after: unknown): string {
  const patched = doc.clone();
  // An alias or merge key on the way, or an anchored node also used elsewhere (patching it would
  // change both places): write the document from its value instead (its comments are lost).
  if (!applyToDocument(patched, diff(before, after)) || !deepEqual(patched.toJS({ maxAliasCount: 1000 }), after)) {
    const fresh = new Document(after, { aliasDuplicateObjects: false });
    fresh.directives = doc.directives?.clone();
    fresh.commentBefore = leadingComment(doc);
    fresh.comment = doc.comment;
    return fresh.toString({ lineWidth: 0 });
  }
  return patched.toString({ lineWidth: 0 });
}

/** Where a parsed document's text begins: its `---`, or its first node. */
function startOf(doc: Document): number {
  return (doc.range as [number, number, number])[0];
}

export function injectStream(source: string, file: string, o: WorkloadOptions): StreamResult {
  const lineCounter = new LineCounter();
  const parsed = parseAllDocuments(source, { lineCounter, merge: true, prettyErrors: false });
  const docs = Array.isArray(parsed) ? parsed : [];
  const errors: string[] = [];
  const reports: DocumentReport[] = [];
  const services: Json[] = [];
  const pods: InjectedPod[] = [];
  const chunks: string[] = [];
  docs.forEach((doc, i) => {
    const start = i === 0 ? 0 : startOf(doc);
    const end = i + 1 < docs.length ? startOf(docs[i + 1] as Document) : source.length;
    const text = source.slice(start, end);
    chunks.push(text);
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        const pos = lineCounter.linePos(e.pos[0]);
        errors.push(`${file}:${pos.line}:${pos.col}: ${e.message.split('\n')[0] ?? ''}`);
      }
      return;
    }
    const value: unknown = doc.toJS({ maxAliasCount: 1000 });
    if (isObject(value) && value.kind === 'Service' && value.apiVersion === 'v1') services.push(value);
    let result: Injected;
    try {
      result = injectObject(value, o);
    } catch (err) {
      if (!(err instanceof InjectError)) throw err;
      errors.push(`${file}: document ${i + 1}: ${err.message}`);
      return;
    }
    pods.push(...result.pods);
    for (const r of result.reports) if (value !== null && value !== undefined) reports.push({ index: i + 1, ...r });
    if (result.object !== value) chunks[i] = rewrite(doc, value, result.object);
  });
  return { text: chunks.join(''), reports, errors, warnings: bypassingServices(services, pods) };
}

/** Streams from several files as one: a `---` between them unless the next already opens with one. */
export function joinStreams(texts: readonly string[]): string {
  let out = '';
  for (const t of texts) {
    if (t.trim() === '') continue;
    if (out !== '') {
      if (!out.endsWith('\n')) out += '\n';
      const first = parseAllDocuments(t);
      const opens = Array.isArray(first) && first[0]?.directives?.docStart === true;
      if (!opens) out += '---\n';
    }
    out += t;
  }
  return out;
}
