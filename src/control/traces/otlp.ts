// OTLP/HTTP trace exports, decoded: the binary protobuf encoding (protobufjs, with the message
// shapes of opentelemetry-proto v1.x collector/trace/v1 declared here rather than vendored as
// .proto files: only the fields a trace viewer reads, nothing loaded from disk at run time) and
// the JSON encoding (hex ids, enums as numbers, 64-bit integers as strings or numbers). Both
// come out as the same plain spans.
import protobuf from 'protobufjs';

const KV = { fields: { key: { type: 'string', id: 1 }, value: { type: 'AnyValue', id: 2 } } };
const ROOT = protobuf.Root.fromJSON({
  nested: {
    otlp: {
      nested: {
        ExportTraceServiceRequest: { fields: { resourceSpans: { rule: 'repeated', type: 'ResourceSpans', id: 1 } } },
        ExportTraceServiceResponse: { fields: { partialSuccess: { type: 'PartialSuccess', id: 1 } } },
        PartialSuccess: { fields: { rejectedSpans: { type: 'int64', id: 1 }, errorMessage: { type: 'string', id: 2 } } },
        ResourceSpans: { fields: { resource: { type: 'Resource', id: 1 }, scopeSpans: { rule: 'repeated', type: 'ScopeSpans', id: 2 } } },
        Resource: { fields: { attributes: { rule: 'repeated', type: 'KeyValue', id: 1 } } },
        ScopeSpans: { fields: { spans: { rule: 'repeated', type: 'Span', id: 2 } } },
        Span: {
          fields: {
            traceId: { type: 'bytes', id: 1 },
            spanId: { type: 'bytes', id: 2 },
            parentSpanId: { type: 'bytes', id: 4 },
            name: { type: 'string', id: 5 },
            kind: { type: 'int32', id: 6 },
            startTimeUnixNano: { type: 'fixed64', id: 7 },
            endTimeUnixNano: { type: 'fixed64', id: 8 },
            attributes: { rule: 'repeated', type: 'KeyValue', id: 9 },
            events: { rule: 'repeated', type: 'Event', id: 11 },
            status: { type: 'Status', id: 15 },
          },
        },
        Event: { fields: { timeUnixNano: { type: 'fixed64', id: 1 }, name: { type: 'string', id: 2 }, attributes: { rule: 'repeated', type: 'KeyValue', id: 3 } } },
        Status: { fields: { message: { type: 'string', id: 2 }, code: { type: 'int32', id: 3 } } },
        KeyValue: KV,
        KeyValueList: { fields: { values: { rule: 'repeated', type: 'KeyValue', id: 1 } } },
        ArrayValue: { fields: { values: { rule: 'repeated', type: 'AnyValue', id: 1 } } },
        AnyValue: {
          oneofs: { value: { oneof: ['stringValue', 'boolValue', 'intValue', 'doubleValue', 'arrayValue', 'kvlistValue', 'bytesValue'] } },
          fields: {
            stringValue: { type: 'string', id: 1 },
            boolValue: { type: 'bool', id: 2 },
            intValue: { type: 'int64', id: 3 },
            doubleValue: { type: 'double', id: 4 },
            arrayValue: { type: 'ArrayValue', id: 5 },
            kvlistValue: { type: 'KeyValueList', id: 6 },
            bytesValue: { type: 'bytes', id: 7 },
          },
        },
      },
    },
  },
});
const REQUEST = ROOT.lookupType('otlp.ExportTraceServiceRequest');
const RESPONSE = ROOT.lookupType('otlp.ExportTraceServiceResponse');

export type AttributeValue = string | number | boolean | readonly AttributeValue[] | { readonly [k: string]: AttributeValue };
export type Attributes = Readonly<Record<string, AttributeValue>>;

export const SPAN_KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'] as const;
export const STATUS_CODES = ['UNSET', 'OK', 'ERROR'] as const;

/** One received span, as the store keeps it and the API shows it. */
export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** '' for a root. */
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: (typeof SPAN_KINDS)[number];
  /** Nanoseconds since the epoch, as a decimal string (beyond a double's precision). */
  readonly startTimeUnixNano: string;
  readonly endTimeUnixNano: string;
  readonly service: string;
  readonly resource: Attributes;
  readonly attributes: Attributes;
  readonly events: readonly { readonly name: string; readonly timeUnixNano: string; readonly attributes: Attributes }[];
  readonly status: { readonly code: (typeof STATUS_CODES)[number]; readonly message: string };
}

export class OtlpDecodeError extends Error {}

/* The decoded message, protobuf and JSON alike, before it is checked: every field optional. */
interface RawKv {
  key?: string;
  value?: RawAny;
}
interface RawAny {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: unknown;
  doubleValue?: number;
  arrayValue?: { values?: RawAny[] };
  kvlistValue?: { values?: RawKv[] };
  bytesValue?: unknown;
}
interface RawSpan {
  traceId?: unknown;
  spanId?: unknown;
  parentSpanId?: unknown;
  name?: string;
  kind?: unknown;
  startTimeUnixNano?: unknown;
  endTimeUnixNano?: unknown;
  attributes?: RawKv[];
  events?: { timeUnixNano?: unknown; name?: string; attributes?: RawKv[] }[];
  status?: { message?: string; code?: unknown };
}
interface RawRequest {
  resourceSpans?: { resource?: { attributes?: RawKv[] }; scopeSpans?: { spans?: RawSpan[] }[] }[];
}

const HEX_ID = /^[0-9a-f]*$/;

/**
 * What one span may hold here, as the SDK's own span limits (128 attributes, 128 events) plus a
 * length cap on text: the store keeps thousands of spans, and one exporter without limits must
 * not fill it with one. Longer text is cut (with a mark), extra entries are left out.
 */
export const SPAN_LIMITS = Object.freeze({ attributes: 128, events: 128, eventAttributes: 32, arrayValues: 128, textChars: 4096 });

/** A field that must be a list, absent or not; anything else makes the export undecodable. */
function list<T>(v: T[] | undefined | null, what: string): T[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new OtlpDecodeError(`${what} must be a list, got ${typeof v}`);
  return v;
}

/** A list of messages: as list(), and each entry must be an object. */
function messages<T>(v: T[] | undefined | null, what: string): T[] {
  const out = list(v, what);
  for (const m of out) if (typeof m !== 'object' || m === null) throw new OtlpDecodeError(`each of ${what} must be an object`);
  return out;
}

function text(v: unknown): string {
  if (typeof v !== 'string') return '';
  return v.length > SPAN_LIMITS.textChars ? `${v.slice(0, SPAN_LIMITS.textChars)}…` : v;
}

/** Bytes (protobuf) or a hex string (JSON) as lower-case hex of `bytes` length; '' when empty. */
function hexId(v: unknown, bytes: number, what: string): string {
  let hex: string;
  if (v === undefined || v === null || v === '') return '';
  if (v instanceof Uint8Array) hex = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
  else if (typeof v === 'string') hex = v.toLowerCase();
  else throw new OtlpDecodeError(`${what} must be bytes or a hex string`);
  if (hex === '') return '';
  if (hex.length !== bytes * 2 || !HEX_ID.test(hex)) throw new OtlpDecodeError(`${what} must be ${bytes} bytes (${bytes * 2} hex digits), got ${JSON.stringify(hex.slice(0, 64))}`);
  return hex;
}

/** A 64-bit count of nanoseconds: a decimal string (protobuf, decoded with longs as strings; JSON) or a number (JSON). */
function nanos(v: unknown): string {
  if (v === undefined || v === null) return '0';
  if (typeof v === 'string' && /^\d+$/.test(v)) return v;
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return BigInt(Math.round(v)).toString();
  throw new OtlpDecodeError(`a time must be a count of nanoseconds, got ${JSON.stringify(v)}`);
}

function int64(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && /^-?\d+$/.test(v)) return Number(v);
  return Number.NaN;
}

function value(v: RawAny | undefined, depth: number): AttributeValue {
  if (typeof v !== 'object' || v === null || depth > 8) return '';
  if (v.stringValue !== undefined && v.stringValue !== null) return text(v.stringValue);
  if (v.boolValue !== undefined && v.boolValue !== null) return v.boolValue === true;
  if (v.intValue !== undefined && v.intValue !== null) return int64(v.intValue);
  if (v.doubleValue !== undefined && v.doubleValue !== null) return Number(v.doubleValue);
  if (v.arrayValue != null) return list(v.arrayValue.values, 'arrayValue.values').slice(0, SPAN_LIMITS.arrayValues).map((x) => value(x, depth + 1));
  if (v.kvlistValue != null) return attributes(v.kvlistValue.values, SPAN_LIMITS.arrayValues, depth + 1);
  if (typeof v.bytesValue === 'string') return text(v.bytesValue);
  if (v.bytesValue instanceof Uint8Array) return text(Buffer.from(v.bytesValue.buffer, v.bytesValue.byteOffset, v.bytesValue.byteLength).toString('base64'));
  return '';
}

function attributes(kvs: RawKv[] | undefined, max: number, depth = 0): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  let n = 0;
  for (const kv of list(kvs, 'attributes')) {
    if (n >= max) break;
    if (typeof kv !== 'object' || kv === null || typeof kv.key !== 'string') continue;
    out[text(kv.key)] = value(kv.value, depth);
    n++;
  }
  return out;
}

function enumIndex<T extends readonly string[]>(names: T, v: unknown, prefix: string): T[number] {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < names.length) return names[v] as T[number];
  if (typeof v === 'string') {
    const name = v.startsWith(prefix) ? v.slice(prefix.length) : v;
    if ((names as readonly string[]).includes(name)) return name as T[number];
  }
  return names[0] as T[number];
}

function spansOf(req: RawRequest): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of messages(req.resourceSpans, 'resourceSpans')) {
    const resource = attributes(rs.resource?.attributes, SPAN_LIMITS.attributes);
    const service = typeof resource['service.name'] === 'string' ? resource['service.name'] : 'unknown_service';
    for (const ss of messages(rs.scopeSpans, 'scopeSpans')) {
      for (const s of messages(ss.spans, 'spans')) {
        const traceId = hexId(s.traceId, 16, 'traceId');
        const spanId = hexId(s.spanId, 8, 'spanId');
        if (traceId === '' || spanId === '') throw new OtlpDecodeError('every span needs a traceId and a spanId');
        out.push({
          traceId,
          spanId,
          parentSpanId: hexId(s.parentSpanId, 8, 'parentSpanId'),
          name: text(s.name),
          kind: enumIndex(SPAN_KINDS, s.kind, 'SPAN_KIND_'),
          startTimeUnixNano: nanos(s.startTimeUnixNano),
          endTimeUnixNano: nanos(s.endTimeUnixNano),
          service,
          resource,
          attributes: attributes(s.attributes, SPAN_LIMITS.attributes),
          events: list(s.events, 'events')
            .slice(0, SPAN_LIMITS.events)
            .filter((e) => typeof e === 'object' && e !== null)
            .map((e) => ({ name: text(e.name), timeUnixNano: nanos(e.timeUnixNano), attributes: attributes(e.attributes, SPAN_LIMITS.eventAttributes) })),
          status: { code: enumIndex(STATUS_CODES, s.status?.code, 'STATUS_CODE_'), message: text(s.status?.message) },
        });
      }
    }
  }
  return out;
}

export function decodeProtobuf(body: Uint8Array): ReceivedSpan[] {
  let message: unknown;
  try {
    message = REQUEST.toObject(REQUEST.decode(body), { longs: String, arrays: true });
  } catch (err) {
    throw new OtlpDecodeError(`not an ExportTraceServiceRequest: ${(err as Error).message}`);
  }
  return spansOf(message as RawRequest);
}

export function decodeJson(text: string): ReceivedSpan[] {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch (err) {
    throw new OtlpDecodeError(`not JSON: ${(err as Error).message}`);
  }
  if (typeof message !== 'object' || message === null || Array.isArray(message)) throw new OtlpDecodeError('an ExportTraceServiceRequest is a JSON object');
  try {
    return spansOf(message as RawRequest);
  } catch (err) {
    // JSON can take any shape; whatever the checks above missed is still the sender's mistake.
    if (err instanceof OtlpDecodeError) throw err;
    throw new OtlpDecodeError(`malformed ExportTraceServiceRequest: ${(err as Error).message}`);
  }
}

/** The answer to an export: empty, or with how many spans were not kept and why. */
export function exportResponse(json: boolean, rejectedSpans: number, errorMessage: string): Buffer | string {
  const partial = rejectedSpans > 0 ? { partialSuccess: { rejectedSpans, errorMessage } } : {};
  if (json) return JSON.stringify(rejectedSpans > 0 ? { partialSuccess: { rejectedSpans: String(rejectedSpans), errorMessage } } : {});
  return Buffer.from(RESPONSE.encode(RESPONSE.fromObject(partial)).finish());
}
