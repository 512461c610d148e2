// spec.selector: which sidecars a policy is for, when the config service hands policies out.
import { describe, expect, it } from 'vitest';
import { doc, errorsOf, policyOf } from './helpers.ts';

describe('spec.selector', () => {
  it('is empty (every sidecar) when absent', () => {
    expect(policyOf('deadlineHeader: x-deadline').selector).toEqual({ service: undefined, matchLabels: {} });
  });

  it('reads a service and labels', () => {
    const p = policyOf("selector:\n  service: orders\n  matchLabels: {tier: backend, 'app.kubernetes.io/part-of': shop, canary: 'true'}");
    expect(p.selector).toEqual({ service: 'orders', matchLabels: { tier: 'backend', 'app.kubernetes.io/part-of': 'shop', canary: 'true' } });
  });

  it('names each bad field with its line', () => {
    expect(errorsOf(doc('selector:\n  service: Orders_1\n  matchLabels: {"bad key!": x, tier: "no spaces"}\n  labels: {}'))).toEqual([
      "t.yaml:7:14: spec.selector.service: must be a service name (a DNS label: lower-case letters, digits and '-', at most 63 characters), got \"Orders_1\"",
      't.yaml:8:31: spec.selector.matchLabels.bad key!: label key "bad key!" is not a Kubernetes label key ([prefix/]name, name at most 63 characters)',
      "t.yaml:8:40: spec.selector.matchLabels.tier: must be a Kubernetes label value (at most 63 characters of letters, digits, '-', '_' and '.'), got \"no spaces\"",
      't.yaml:9:5: spec.selector.labels: unknown field; known fields are service, matchLabels',
    ]);
  });
});
