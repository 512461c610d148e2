// Policy file text to a frozen SidecarPolicy, or every error in it with its position. The only
// producer of ./types.ts shapes: everything downstream trusts what comes out of here.
import { LineCounter, isMap, parseAllDocuments } from 'yaml';
import type { ParseResult, PolicyError } from './errors.ts';
import { BAD, Field, Reader, type MapView } from './reader.ts';
import {
  API_VERSION,
  DEFAULTS,
  KIND,
  LIMITS_FIELDS,
  MAX_DEADLINE,
  SHUTDOWN_FIELDS,
  ACCESS_LOG_FIELDS,
  ACCESS_LOG_DEFAULTS,
  readSection,
  readValue,
} from './schema.ts';
import { readAddress, readTimeouts } from './sections.ts';
import { UPSTREAM_PROTOCOLS, type PolicySelector, type InboundPolicy, type ListenerAddress, type OutboundPolicy, type SidecarPolicy, type UpstreamProtocol } from './types.ts';
import { checkGlobalRateLimits, readRateLimits, readRedis } from './ratelimits.ts';
import { DNS_LABEL, readUpstreams } from './upstreams.ts';
import { readAdmission, readCreditGrants, readIdempotency } from './backpressure.ts';

export { formatPolicyError, type ParseResult, type PolicyError } from './errors.ts';

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** A header name as Node hands them to us: lower-case. */
const LOWER_HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

export function parsePolicy(text: string, file: string): ParseResult {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines });
  const at = (offset: number, reason: string): PolicyError => {
    const { line, col } = lines.linePos(offset);
    return { file, line, col, field: '', reason };
  };

  // A broken tree would only produce misleading schema errors, so syntax errors come alone.
  const syntax = docs.flatMap((d) => d.errors.map((e) => at(e.pos[0], e.message.split(' at line ')[0]!)));
  if (syntax.length > 0) return { ok: false, errors: syntax };

  // Empty documents (a stray `---`, a file of comments) carry nothing and are skipped.
  const present = docs.filter((d) => d.contents !== null);
  const first = present[0];
  if (!first) return { ok: false, errors: [at(0, `no ${KIND} document in the file`)] };
  const extra = present
    .slice(1)
    .map((d) => at(d.range[0], `a policy file holds exactly one document; this is a second one`));

  const reader = new Reader(file, lines, first);
  const policy = readDocument(reader);
  // Reading order follows the types, not the file; people fix files top to bottom.
  const errors = [...reader.errors, ...extra].sort((a, b) => a.line - b.line || a.col - b.col);
  if (errors.length > 0 || !policy) return { ok: false, errors };
  return { ok: true, policy: deepFreeze(policy) };
}

function readDocument(r: Reader): SidecarPolicy | undefined {
  const root = r.root();
  if (!isMap(root.node)) {
    root.fail(`the document must be a map of apiVersion, kind, metadata and spec, ${root.got()}`);
    return undefined;
  }
  const doc = root.map(['apiVersion', 'kind', 'metadata', 'spec']);
  if (doc === BAD) return undefined;
  // Another kind of document (a Deployment in the same folder) is not checked against our schema.
  const header = [exact(doc.require('apiVersion'), API_VERSION), exact(doc.require('kind'), KIND)];
  if (header.includes(false)) return undefined;

  let name = '';
  const metadata = doc.require('metadata');
  const meta = metadata === BAD ? BAD : metadata.map(['name']);
  const nameField = meta === BAD ? BAD : meta.require('name');
  const nameValue = nameField === BAD ? BAD : nameField.string();
  if (nameField !== BAD && nameValue !== BAD) {
    if (nameValue.length <= 253 && DNS_SUBDOMAIN.test(nameValue)) name = nameValue;
    else {
      nameField.fail(
        `must be a DNS-1123 name (lower-case letters, digits, '-' and '.', at most 253 characters), ${nameField.got()}`,
      );
    }
  }
  return readSpec(doc.get('spec') ?? new Field(r, 'spec', null, root.offset), name);
}

/** Kubernetes label keys ([prefix/]name) and values, as the API server checks them. */
const LABEL_NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$/;
const LABEL_VALUE = /^(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)$/;

function isLabelKey(key: string): boolean {
  const slash = key.indexOf('/');
  if (slash < 0) return LABEL_NAME.test(key);
  const prefix = key.slice(0, slash);
  return prefix.length <= 253 && DNS_SUBDOMAIN.test(prefix) && LABEL_NAME.test(key.slice(slash + 1));
}

const NO_SELECTOR: PolicySelector = { service: undefined, matchLabels: {} };

function readSelector(f: Field | undefined): PolicySelector {
  if (f === undefined) return NO_SELECTOR;
  const m = f.map(['service', 'matchLabels']);
  if (m === BAD) return NO_SELECTOR;
  let service: string | undefined;
  const s = m.get('service');
  const value = s?.string();
  if (s && value !== undefined && value !== BAD) {
    if (value.length <= 63 && DNS_LABEL.test(value)) service = value;
    else s.fail(`must be a service name (a DNS label: lower-case letters, digits and '-', at most 63 characters), ${s.got()}`);
  }
  const matchLabels: Record<string, string> = {};
  const labels = m.get('matchLabels');
  const entries = labels?.entries();
  if (labels && entries !== undefined && entries !== BAD) {
    for (const [key, field] of entries) {
      const v = field.scalar();
      const text = typeof v === 'number' || typeof v === 'boolean' ? String(v) : v;
      if (!isLabelKey(key)) field.fail(`label key ${JSON.stringify(key)} is not a Kubernetes label key ([prefix/]name, name at most 63 characters)`);
      else if (typeof text !== 'string' || !LABEL_VALUE.test(text)) field.fail(`must be a Kubernetes label value (at most 63 characters of letters, digits, '-', '_' and '.'), ${field.got()}`);
      else matchLabels[key] = text;
    }
  }
  return { service, matchLabels };
}

function exact(f: Field | typeof BAD, want: string): boolean {
  if (f === BAD) return false;
  if (f.scalar() === want) return true;
  f.fail(`must be ${want}, ${f.got()}`);
  return false;
}

function readSpec(f: Field, name: string): SidecarPolicy | undefined {
  const spec = f.map(['selector', 'admin', 'limits', 'shutdown', 'deadlineHeader', 'inbound', 'outbound', 'redis', 'accessLog']);
  if (spec === BAD) return undefined;
  const limits = spec.get('limits');
  const shutdown = spec.get('shutdown');
  const accessLog = spec.get('accessLog');
  const policy: SidecarPolicy = {
    name,
    selector: readSelector(spec.get('selector')),
    admin: readAddress(spec.get('admin'), DEFAULTS.admin, 0),
    outbound: readOutbound(spec.get('outbound')),
    inbound: readInbound(spec.get('inbound'), spec.get('redis') !== undefined && spec.get('redis')?.isOff() !== true),
    limits: limits ? readSection(limits, LIMITS_FIELDS, DEFAULTS.limits) : DEFAULTS.limits,
    shutdown: shutdown ? readSection(shutdown, SHUTDOWN_FIELDS, DEFAULTS.shutdown) : DEFAULTS.shutdown,
    deadlineHeader: readDeadlineHeader(spec.get('deadlineHeader')),
    redis: readRedis(spec.get('redis')),
    accessLog: accessLog === undefined || accessLog.isOff() ? undefined : readSection(accessLog, ACCESS_LOG_FIELDS, ACCESS_LOG_DEFAULTS),
  };
  // Each rule once: a rule inherited by several upstreams is the same object.
  const rules = new Set([
    ...policy.inbound.rateLimits,
    ...policy.outbound.defaults.rateLimits,
    ...policy.outbound.upstreams.flatMap((u) => u.rateLimits),
  ]);
  checkGlobalRateLimits([...rules], policy.redis);
  // Fields that failed fell back to defaults; comparing those would report conflicts nobody wrote.
  if (f.reader.errors.length === 0) checkListenerPorts(policy, spec);
  return policy;
}

function readListener(f: Field | undefined, base: ListenerAddress): ListenerAddress | undefined {
  return f?.isOff() ? undefined : readAddress(f, base, 0);
}

function readAppProtocol(f: Field | undefined): UpstreamProtocol {
  const p = f?.lookup('protocol')?.oneOf(UPSTREAM_PROTOCOLS);
  return p === undefined || p === BAD ? DEFAULTS.inbound.appProtocol : p;
}

/** A section's fields; none when it is absent or not a map (reported, and defaults stand in). */
function fieldsOf(f: Field | undefined, known: readonly string[]): MapView | undefined {
  const m = f?.map(known);
  return m === BAD ? undefined : m;
}

function readInbound(f: Field | undefined, hasRedis: boolean): InboundPolicy {
  const d = DEFAULTS.inbound;
  const m = fieldsOf(f, ['listener', 'app', 'timeouts', 'maxDeadlineMs', 'rateLimits', 'admission', 'credits', 'idempotency']);
  const admission = readAdmission(m?.get('admission'));
  const maxDeadline = m?.get('maxDeadlineMs');
  const maxDeadlineMs = maxDeadline ? readValue(maxDeadline, MAX_DEADLINE, undefined) : d.maxDeadlineMs;
  return {
    listener: readListener(m?.get('listener'), d.listener),
    // The app is something to connect to: port 0 could never answer.
    app: readAddress(m?.get('app'), d.app, 1, ['protocol']),
    appProtocol: readAppProtocol(m?.get('app')),
    timeouts: readTimeouts(m?.get('timeouts'), d.timeouts),
    maxDeadlineMs: maxDeadlineMs === BAD ? d.maxDeadlineMs : (maxDeadlineMs as number | undefined),
    rateLimits: readRateLimits(m?.get('rateLimits'), []),
    admission,
    credits: readCreditGrants(m?.get('credits'), admission),
    idempotency: readIdempotency(m?.get('idempotency'), hasRedis),
  };
}

function readOutbound(f: Field | undefined): OutboundPolicy {
  const d = DEFAULTS.outbound;
  const m = fieldsOf(f, ['listener', 'unknownHosts', 'defaults', 'upstreams']);
  const unknown = m?.get('unknownHosts')?.oneOf(['forward', 'reject'] as const);
  return {
    listener: readListener(m?.get('listener'), d.listener),
    unknownHosts: unknown === undefined || unknown === BAD ? d.unknownHosts : unknown,
    ...readUpstreams(m?.get('defaults'), m?.get('upstreams')),
  };
}

function readDeadlineHeader(f: Field | undefined): string {
  const v = f?.string();
  if (!f || v === undefined || v === BAD) return DEFAULTS.deadlineHeader;
  if (LOWER_HTTP_TOKEN.test(v)) return v;
  f.fail(`must be a lower-case HTTP header name, ${f.got()}`);
  return DEFAULTS.deadlineHeader;
}

const WILDCARDS = new Set(['0.0.0.0', '::']);

/** Two listeners on one port would fail at bind time; say so here, where it can be fixed. */
function checkListenerPorts(policy: SidecarPolicy, spec: MapView): void {
  const listeners = [
    { path: 'spec.admin', addr: policy.admin, field: spec.get('admin') },
    { path: 'spec.inbound.listener', addr: policy.inbound.listener, field: spec.get('inbound')?.lookup('listener') },
    { path: 'spec.outbound.listener', addr: policy.outbound.listener, field: spec.get('outbound')?.lookup('listener') },
  ];
  for (const [j, b] of listeners.entries()) {
    for (const a of listeners.slice(0, j)) {
      if (!a.addr || !b.addr || a.addr.port === 0 || a.addr.port !== b.addr.port) continue;
      const overlap = a.addr.host === b.addr.host || WILDCARDS.has(a.addr.host) || WILDCARDS.has(b.addr.host);
      const at = b.field?.lookup('port') ?? a.field?.lookup('port') ?? b.field ?? a.field;
      if (overlap && at) at.fail(`port ${b.addr.port} is used by both ${a.path} and ${b.path}`);
    }
  }
}

/** Config is parsed once and shared by every layer; freezing makes accidental edits throw. */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
