// The backpressure sections of a policy: inbound admission (adaptive concurrency, priority
// shedding, deadline-aware refusals), the credits a consumer grants, idempotent dedupe, and per
// upstream the credits a producer spends and hedging. All are off unless a policy writes them;
// writing a section (even `{}`) turns it on with the defaults below, and `off` turns it off again.
import { isMap } from 'yaml';
import { BAD, type Field } from './reader.ts';
import { MAX_MS, type SectionSpec } from './schema.ts';
import { readSwitchable, readWithSwitchables } from './sections.ts';
import type {
  AdaptiveLimitPolicy,
  AdmissionPolicy,
  CreditGrantPolicy,
  CreditPolicy,
  HedgePolicy,
  IdempotencyPolicy,
} from './types.ts';

const LOWER_HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

/** What each section is when a policy turns it on without saying more. */
export const BACKPRESSURE_DEFAULTS = {
  adaptive: {
    initialLimit: 20,
    minLimit: 2,
    sampleWindowMs: 100,
    minSamples: 10,
    minRttProbeIntervalMs: 10000,
    probeRatio: 0.5,
  } satisfies AdaptiveLimitPolicy,
  admission: {
    mode: 'enforce',
    // The adaptive limit is on unless `adaptive: off`: the point is not having to know capacity.
    adaptive: undefined,
    maxConcurrency: 1000,
    queue: { maxWaiting: 64, maxWaitMs: 50 },
    priorityHeader: 'sluice-priority',
    sheddableShare: 0.8,
    deadlineAware: true,
  } satisfies AdmissionPolicy,
  credits: { leaseMs: 10000, weights: {}, maxProducers: 1024 } satisfies CreditGrantPolicy,
  // A short wait: a credit comes back about every (latency / credits); longer waits are queueing
  // that the consumer's limit exists to avoid. Refused requests carry Retry-After.
  producerCredits: { maxWaiting: 1000, maxWaitMs: 25, recheckMs: 30000 } satisfies CreditPolicy,
  idempotency: {
    ttlMs: 300_000,
    maxEntries: 10_000,
    maxBytes: 64 * 1024 * 1024,
    maxResponseBytes: 1024 * 1024,
    store: 'memory',
  } satisfies IdempotencyPolicy,
  hedge: { delayMs: 'p95', minDelayMs: 5, maxHedges: 1 } satisfies HedgePolicy,
} as const;

const ADAPTIVE_FIELDS: SectionSpec<AdaptiveLimitPolicy> = {
  initialLimit: { kind: 'int', min: 1, max: 1_000_000 },
  minLimit: { kind: 'int', min: 1, max: 1_000_000 },
  sampleWindowMs: { kind: 'int', min: 10, max: 60_000 },
  minSamples: { kind: 'int', min: 1, max: 100_000 },
  minRttProbeIntervalMs: { kind: 'int', min: 1000, max: 3_600_000 },
  probeRatio: { kind: 'number', min: 0.05, max: 1 },
};

const ADMISSION_FIELDS = {
  mode: { kind: 'enum', values: ['enforce', 'shadow', 'off'] },
  maxConcurrency: { kind: 'int', min: 1, max: 1_000_000 },
  queue: {
    kind: 'section',
    fields: {
      maxWaiting: { kind: 'int', min: 0, max: 1_000_000 },
      maxWaitMs: { kind: 'int', min: 0, max: MAX_MS },
    },
  },
  sheddableShare: { kind: 'number', min: 0, max: 1 },
  deadlineAware: { kind: 'bool' },
} as const;

const CREDIT_GRANT_FIELDS = {
  leaseMs: { kind: 'int', min: 100, max: 3_600_000 },
  maxProducers: { kind: 'int', min: 1, max: 100_000 },
} as const;

const CREDIT_FIELDS: SectionSpec<CreditPolicy> = {
  maxWaiting: { kind: 'int', min: 0, max: 1_000_000 },
  maxWaitMs: { kind: 'int', min: 0, max: MAX_MS },
  recheckMs: { kind: 'int', min: 100, max: 3_600_000 },
};

const IDEMPOTENCY_FIELDS: SectionSpec<IdempotencyPolicy> = {
  ttlMs: { kind: 'int', min: 1000, max: MAX_MS },
  maxEntries: { kind: 'int', min: 1, max: 10_000_000 },
  maxBytes: { kind: 'int', min: 0, max: 16 * 1024 * 1024 * 1024 },
  maxResponseBytes: { kind: 'int', min: 0, max: 64 * 1024 * 1024 },
  store: { kind: 'enum', values: ['memory', 'redis'] },
};

/** inbound.admission, off unless written. */
export function readAdmission(f: Field | undefined): AdmissionPolicy | undefined {
  if (!f) return undefined;
  if (f.isOff()) return undefined;
  if (!f.isEmpty() && !isMap(f.node)) {
    f.fail(`must be a map or off, ${f.got()}`);
    return undefined;
  }
  const d = BACKPRESSURE_DEFAULTS;
  const base: AdmissionPolicy = { ...d.admission, adaptive: d.adaptive };
  // priorityHeader is read apart: a header name has rules of its own.
  const read = readWithSwitchables<AdmissionPolicy>(
    f,
    ADMISSION_FIELDS,
    { adaptive: { spec: ADAPTIVE_FIELDS as SectionSpec<object>, fallback: d.adaptive } },
    base,
    ['priorityHeader'],
  );
  if (!read) return base;
  const { m } = read;
  const out: { -readonly [K in keyof AdmissionPolicy]: AdmissionPolicy[K] } = { ...read.out, priorityHeader: base.priorityHeader };
  const header = m.get('priorityHeader');
  const name = header?.string();
  if (header && name !== undefined && name !== BAD) {
    if (LOWER_HTTP_TOKEN.test(name)) out.priorityHeader = name;
    else header.fail(`must be a lower-case HTTP header name, ${header.got()}`);
  }
  const adaptive = out.adaptive;
  if (adaptive !== undefined) {
    const at = m.get('adaptive');
    if (adaptive.minLimit > adaptive.initialLimit) {
      (at?.lookup('minLimit') ?? at?.lookup('initialLimit') ?? f).fail(
        `adaptive.minLimit (${adaptive.minLimit}) must be at most adaptive.initialLimit (${adaptive.initialLimit})`,
      );
    }
    const initialWritten = at?.lookup('initialLimit') !== undefined;
    if (adaptive.initialLimit > out.maxConcurrency && initialWritten) {
      (at?.lookup('initialLimit') as Field).fail(
        `adaptive.initialLimit (${adaptive.initialLimit}) must be at most maxConcurrency (${out.maxConcurrency})`,
      );
    } else if (adaptive.initialLimit > out.maxConcurrency) {
      // A default above a ceiling the policy wrote: the ceiling is what was meant.
      const initialLimit = out.maxConcurrency;
      const minWritten = at?.lookup('minLimit');
      if (minWritten !== undefined && adaptive.minLimit > initialLimit) {
        minWritten.fail(`adaptive.minLimit (${adaptive.minLimit}) must be at most maxConcurrency (${out.maxConcurrency})`);
      }
      out.adaptive = { ...adaptive, initialLimit, minLimit: Math.min(adaptive.minLimit, initialLimit) };
    }
  }
  return out;
}

/** inbound.credits, off unless written; needs admission, whose limit it shares out. */
export function readCreditGrants(f: Field | undefined, admission: AdmissionPolicy | undefined): CreditGrantPolicy | undefined {
  if (!f || f.isOff()) return undefined;
  if (!f.isEmpty() && !isMap(f.node)) {
    f.fail(`must be a map or off, ${f.got()}`);
    return undefined;
  }
  const base = BACKPRESSURE_DEFAULTS.credits;
  const read = readWithSwitchables<CreditGrantPolicy>(f, CREDIT_GRANT_FIELDS, {}, base, ['weights']);
  if (!read) return base;
  const out: CreditGrantPolicy = { ...read.out, weights: readWeights(read.m.get('weights')) };
  if (admission === undefined || admission.mode === 'off') {
    f.fail('credits share out the app\'s admission limit: turn on inbound.admission too');
  }
  return out;
}

/** weights: { <service>: <weight> }. */
function readWeights(f: Field | undefined): Readonly<Record<string, number>> {
  if (!f || f.isEmpty()) return {};
  if (!isMap(f.node)) {
    f.fail(`must be a map of producer service name to weight, ${f.got()}`);
    return {};
  }
  const out: Record<string, number> = {};
  for (const pair of f.node.items) {
    const key = f.reader.resolve(pair.key) as { value?: unknown; range?: [number] } | null;
    const name = key?.value;
    const child = f.child(`${f.path}.${String(name)}`, pair.value, key?.range?.[0] ?? f.offset);
    if (typeof name !== 'string' || !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)) {
      child.fail(`must be keyed by a producer service name (a DNS-1123 name), got ${JSON.stringify(name)}`);
      continue;
    }
    const w = child.number(0.01, 1000);
    if (w !== BAD) out[name] = w;
  }
  return out;
}

/** inbound.idempotency, off unless written. store: redis needs spec.redis (`hasRedis`). */
export function readIdempotency(f: Field | undefined, hasRedis: boolean): IdempotencyPolicy | undefined {
  const out = readSwitchable(f, IDEMPOTENCY_FIELDS, undefined, BACKPRESSURE_DEFAULTS.idempotency);
  if (out?.store === 'redis' && !hasRedis) {
    (f?.lookup('store') ?? f)?.fail('store: redis shares stored responses through spec.redis: set spec.redis too');
  }
  return out;
}

/** credits at an outbound level (defaults, upstream), off unless written. */
export function readCredits(f: Field | undefined, base: CreditPolicy | undefined): CreditPolicy | undefined {
  return readSwitchable(f, CREDIT_FIELDS, base, BACKPRESSURE_DEFAULTS.producerCredits);
}

/** hedge at an outbound level or route, off unless written. delayMs: an integer or p95. */
export function readHedge(f: Field | undefined, base: HedgePolicy | undefined): HedgePolicy | undefined {
  if (!f) return base;
  if (f.isOff()) return undefined;
  if (!f.isEmpty() && !isMap(f.node)) {
    f.fail(`must be a map or off, ${f.got()}`);
    return base;
  }
  const m = f.map(['delayMs', 'minDelayMs', 'maxHedges']);
  const out: { -readonly [K in keyof HedgePolicy]: HedgePolicy[K] } = { ...(base ?? BACKPRESSURE_DEFAULTS.hedge) };
  if (m === BAD) return out;
  const delay = m.get('delayMs');
  if (delay) {
    if (delay.scalar() === 'p95') out.delayMs = 'p95';
    else {
      const v = delay.scalar();
      if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_MS) out.delayMs = v;
      else delay.fail(`must be an integer from 1 to ${MAX_MS} (ms) or p95, ${delay.got()}`);
    }
  }
  const min = m.get('minDelayMs')?.int(0, MAX_MS);
  if (min !== undefined && min !== BAD) out.minDelayMs = min;
  const hedges = m.get('maxHedges')?.int(1, 3);
  if (hedges !== undefined && hedges !== BAD) out.maxHedges = hedges;
  return out;
}
