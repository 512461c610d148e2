// loadBalancer and outlierDetection: defaults, merging per upstream, `off` sub-sections, errors.
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../../src/policy/parse.ts';
import { doc, errorsOf } from './helpers.ts';

function upstreams(spec: string) {
  const r = parsePolicy(doc(spec), 't.yaml');
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.line}:${e.col} ${e.field}: ${e.reason}`).join('\n'));
  return r.policy.outbound;
}

describe('loadBalancer and outlierDetection', () => {
  it('default to p2c-ewma and enforced ejection', () => {
    const out = upstreams('outbound:\n  upstreams:\n    - {name: a, hosts: [a], endpoints: ["127.0.0.1:1"]}');
    expect(out.upstreams[0]?.loadBalancer).toEqual({ algorithm: 'p2c-ewma', decayMs: 10000, defaultRttMs: 1 });
    expect(out.upstreams[0]?.outlierDetection).toMatchObject({ mode: 'enforce', consecutiveFailures: 5, baseEjectionMs: 1000 });
  });

  it('merge field by field: defaults, then the upstream; sub-sections can be off', () => {
    const out = upstreams(
      [
        'outbound:',
        '  defaults:',
        '    outlierDetection: {mode: shadow, latency: off}',
        '  upstreams:',
        '    - name: a',
        '      hosts: [a]',
        '      endpoints: ["127.0.0.1:1"]',
        '      loadBalancer: {algorithm: round-robin}',
        '      outlierDetection: {consecutiveFailures: 2, successRate: off}',
      ].join('\n'),
    );
    const u = out.upstreams[0];
    expect(u?.loadBalancer.algorithm).toBe('round-robin');
    expect(u?.loadBalancer.decayMs).toBe(10000);
    expect(u?.outlierDetection).toMatchObject({ mode: 'shadow', consecutiveFailures: 2, successRate: undefined, latency: undefined });
    expect(out.defaults.outlierDetection.successRate).toEqual({ windowMs: 10000, minRequests: 20, minSuccessRate: 0.5 });
  });

  it('reports bad values with file, line and column', () => {
    expect(
      errorsOf(doc('outbound:\n  defaults:\n    loadBalancer: {algorithm: p2c}\n    outlierDetection: {baseEjectionMs: 5000, maxEjectionMs: 1000, mode: on}')),
    ).toEqual([
      't.yaml:8:33: spec.outbound.defaults.loadBalancer.algorithm: must be one of p2c-ewma, round-robin, got "p2c"',
      't.yaml:9:63: spec.outbound.defaults.outlierDetection.maxEjectionMs: maxEjectionMs (1000) must be at least baseEjectionMs (5000)',
      't.yaml:9:75: spec.outbound.defaults.outlierDetection.mode: must be one of enforce, shadow, off, got "on"; did you mean off?',
    ]);
  });
});

describe('circuitBreaker', () => {
  it('reports bad values with file, line and column', () => {
    expect(
      errorsOf(
        doc(
          'outbound:\n  defaults:\n    circuitBreaker: {openMs: 9000, maxOpenMs: 1000, failureRatio: 50, slowCall: {ratio: 2}, halfOpenProbes: 0, maxRequests: off, maxPending: -1}',
        ),
      ),
    ).toEqual([
      't.yaml:8:49: spec.outbound.defaults.circuitBreaker.maxOpenMs: maxOpenMs (1000) must be at least openMs (9000)',
      't.yaml:8:69: spec.outbound.defaults.circuitBreaker.failureRatio: must be a number from 0 to 1, got 50',
      't.yaml:8:91: spec.outbound.defaults.circuitBreaker.slowCall.ratio: must be a number from 0 to 1, got 2',
      't.yaml:8:111: spec.outbound.defaults.circuitBreaker.halfOpenProbes: must be an integer from 1 to 1000, got 0',
      't.yaml:8:144: spec.outbound.defaults.circuitBreaker.maxPending: must be an integer from 0 to 1000000 or off, got -1',
    ]);
  });

  it('a route may not turn on what its section does not know', () => {
    expect(
      errorsOf(
        doc('outbound:\n  upstreams:\n    - {name: a, hosts: [a], endpoints: ["127.0.0.1:1"], circuitBreaker: {slowCalls: off}}'),
      ),
    ).toEqual([expect.stringMatching(/circuitBreaker\.slowCalls: unknown field/)]);
  });
});
