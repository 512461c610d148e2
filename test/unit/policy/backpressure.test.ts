// The backpressure sections: off unless written, defaults when turned on, exact errors.
import { describe, expect, it } from 'vitest';
import { BACKPRESSURE_DEFAULTS } from '../../../src/policy/backpressure.ts';
import { doc, errorsOf, policyOf } from './helpers.ts';

describe('backpressure sections: parsing', () => {
  it('are all off when not written', () => {
    const p = policyOf('inbound: {}');
    expect(p.inbound.admission).toBeUndefined();
    expect(p.inbound.credits).toBeUndefined();
    expect(p.inbound.idempotency).toBeUndefined();
    expect(p.outbound.defaults.credits).toBeUndefined();
    expect(p.outbound.defaults.hedge).toBeUndefined();
  });

  it('an empty section turns the protection on with its defaults (admission: adaptive)', () => {
    const p = policyOf('inbound:\n  admission: {}\n  credits: {}\n  idempotency: {}');
    expect(p.inbound.admission).toEqual({ ...BACKPRESSURE_DEFAULTS.admission, adaptive: BACKPRESSURE_DEFAULTS.adaptive });
    expect(p.inbound.credits).toEqual(BACKPRESSURE_DEFAULTS.credits);
    expect(p.inbound.idempotency).toEqual(BACKPRESSURE_DEFAULTS.idempotency);
  });

  it('merges fields over the defaults; adaptive: off leaves the static limit', () => {
    const p = policyOf(
      'inbound:\n  admission: {adaptive: off, maxConcurrency: 8, queue: {maxWaitMs: 5}, priorityHeader: x-prio}\n  credits: {weights: {checkout: 3}}',
    );
    expect(p.inbound.admission).toMatchObject({ adaptive: undefined, maxConcurrency: 8, queue: { maxWaiting: 64, maxWaitMs: 5 }, priorityHeader: 'x-prio' });
    expect(p.inbound.credits?.weights).toEqual({ checkout: 3 });
  });

  it('a maxConcurrency below the default initialLimit lowers the start, it is no error', () => {
    const p = policyOf('inbound:\n  admission: {maxConcurrency: 10}');
    expect(p.inbound.admission?.adaptive).toMatchObject({ initialLimit: 10, minLimit: 2 });
    expect(policyOf('inbound:\n  admission: {maxConcurrency: 1}').inbound.admission?.adaptive).toMatchObject({ initialLimit: 1, minLimit: 1 });
  });

  it('credits and hedging merge down outbound levels and routes; off turns them off below', () => {
    const p = policyOf(`
outbound:
  defaults:
    credits: {maxWaitMs: 10}
    hedge: {delayMs: 40}
  upstreams:
    - name: a
      hosts: [a]
      endpoints: [127.0.0.1:1]
      credits: {maxWaiting: 5}
      routes:
        - {name: writes, match: {methods: [POST]}, hedge: off}
    - name: b
      hosts: [b]
      endpoints: [127.0.0.1:2]
      credits: off
      hedge: {delayMs: p95}`);
    const [a, b] = p.outbound.upstreams;
    expect(a?.credits).toEqual({ maxWaiting: 5, maxWaitMs: 10, recheckMs: 30000 });
    expect(a?.routes.map((r) => r.hedge?.delayMs)).toEqual([undefined, 40]);
    expect(b?.credits).toBeUndefined();
    expect(b?.hedge).toEqual({ delayMs: 'p95', minDelayMs: 5, maxHedges: 1 });
  });
});

describe('backpressure sections: errors name file, line, column, field and reason', () => {
  it.each([
    {
      name: 'credits without admission',
      spec: 'inbound:\n  credits: {}',
      errors: ["t.yaml:7:14: spec.inbound.credits: credits share out the app's admission limit: turn on inbound.admission too"],
    },
    {
      name: 'an unknown admission field',
      spec: 'inbound:\n  admission: {maxConcurency: 4}',
      errors: ['t.yaml:7:17: spec.inbound.admission.maxConcurency: unknown field; did you mean maxConcurrency?'],
    },
    {
      name: 'a share out of range',
      spec: 'inbound:\n  admission: {sheddableShare: 1.5}',
      errors: ['t.yaml:7:33: spec.inbound.admission.sheddableShare: must be a number from 0 to 1, got 1.5'],
    },
    {
      name: 'minLimit above initialLimit',
      spec: 'inbound:\n  admission:\n    adaptive: {initialLimit: 4, minLimit: 8}',
      errors: ['t.yaml:8:45: spec.inbound.admission.adaptive.minLimit: adaptive.minLimit (8) must be at most adaptive.initialLimit (4)'],
    },
    {
      name: 'initialLimit above maxConcurrency',
      spec: 'inbound:\n  admission:\n    maxConcurrency: 10\n    adaptive: {initialLimit: 20}',
      errors: ['t.yaml:9:32: spec.inbound.admission.adaptive.initialLimit: adaptive.initialLimit (20) must be at most maxConcurrency (10)'],
    },
    {
      name: 'a bad priority header',
      spec: 'inbound:\n  admission: {priorityHeader: X-Prio}',
      errors: ['t.yaml:7:33: spec.inbound.admission.priorityHeader: must be a lower-case HTTP header name, got "X-Prio"'],
    },
    {
      name: 'a weight that is not a number',
      spec: 'inbound:\n  admission: {}\n  credits: {weights: {checkout: lots}}',
      errors: ['t.yaml:8:35: spec.inbound.credits.weights.checkout: must be a number from 0.01 to 1000, got "lots"'],
    },
    {
      name: 'an idempotency store that does not exist',
      spec: 'inbound:\n  idempotency: {store: disk}',
      errors: ['t.yaml:7:26: spec.inbound.idempotency.store: must be one of memory, redis, got "disk"'],
    },
    {
      name: 'a Redis store without spec.redis',
      spec: 'inbound:\n  idempotency: {store: redis}',
      errors: ['t.yaml:7:26: spec.inbound.idempotency.store: store: redis shares stored responses through spec.redis: set spec.redis too'],
    },
    {
      name: 'a hedge delay that is neither ms nor p95',
      spec: 'outbound:\n  defaults:\n    hedge: {delayMs: p99}',
      errors: ['t.yaml:8:24: spec.outbound.defaults.hedge.delayMs: must be an integer from 1 to 86400000 (ms) or p95, got "p99"'],
    },
    {
      name: 'too many hedges',
      spec: 'outbound:\n  defaults:\n    hedge: {maxHedges: 5}',
      errors: ['t.yaml:8:26: spec.outbound.defaults.hedge.maxHedges: must be an integer from 1 to 3, got 5'],
    },
    {
      name: 'credits that are not a map',
      spec: 'outbound:\n  defaults:\n    credits: yes',
      errors: ['t.yaml:8:16: spec.outbound.defaults.credits: must be a map or off, got "yes"'],
    },
  ])('$name', ({ spec, errors }) => {
    expect(errorsOf(doc(spec))).toEqual(errors);
  });
});
