// Which objects are workloads, where their pod template is, and which service a pod is.
import { describe, expect, it } from 'vitest';
import { CONTROL_ADDRESS, TOKEN_SECRET } from '../../../src/inject/annotations.ts';
import { injectWorkload, serviceName } from '../../../src/inject/workloads.ts';
import { DEFAULT_IMAGE } from '../../../src/cli/inject.ts';
import { SLUICE_VERSION } from '../../../src/cli/version.ts';

const settings = { image: 'img:1', control: CONTROL_ADDRESS, tokenSecret: TOKEN_SECRET, legacy: false };

describe('workloads', () => {
  it('the default image is the release on ghcr.io', () => {
    expect(DEFAULT_IMAGE).toBe(`ghcr.io/sluice-dev/sluice:${SLUICE_VERSION}`);
  });

  it('names the service by app.kubernetes.io/name, app, then the name; a generated pod name loses its hash', () => {
    expect(serviceName({ metadata: { name: 'd', labels: { app: 'w' } } }, { metadata: { labels: { 'app.kubernetes.io/name': 'p', app: 'q' } } })).toBe('p');
    expect(serviceName({ metadata: { name: 'd', labels: { app: 'w' } } }, { metadata: { labels: {} } })).toBe('w');
    expect(serviceName({ metadata: { name: 'd' } }, {})).toBe('d');
    expect(serviceName({ metadata: { generateName: 'orders-7d9f8b7c4-', labels: { 'pod-template-hash': '7d9f8b7c4' } } }, {})).toBe('orders');
    expect(serviceName({ metadata: { generateName: 'agent-' } }, {})).toBe('agent');
    expect(serviceName({ metadata: {} }, {})).toBeUndefined();
  });

  it('ignores what is not a workload it knows', () => {
    for (const obj of [null, 'text', [], { kind: 'Service', apiVersion: 'v1' }, { kind: 'Deployment', apiVersion: 'extensions/v1beta1' }, { kind: 'Pod' }, { kind: 'toString', spec: {} }, { kind: 'constructor' }]) {
      expect(injectWorkload(obj, { settings }).kind).toBe('ignored');
    }
  });

  it("keeps the app's own proxy setting in either spelling, and adds neither spelling then", () => {
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p' },
      spec: { containers: [{ name: 'app', image: 'a', ports: [{ containerPort: 8080 }], env: [{ name: 'HTTP_PROXY', value: 'http://corp:3128' }, { name: 'no_proxy', value: '.corp' }] }] },
    };
    const out = injectWorkload(pod, { settings });
    if (out.kind !== 'injected') throw new Error(out.kind);
    const app = ((out.object.spec as { containers: { name: string; env: { name: string; value?: string }[] }[] }).containers).find((c) => c.name === 'app');
    const names = app?.env.map((e) => e.name) ?? [];
    expect(names.filter((n) => n.toLowerCase() === 'http_proxy')).toEqual(['HTTP_PROXY']);
    expect(names.filter((n) => n.toLowerCase() === 'no_proxy')).toEqual(['no_proxy']);
  });

  it('refuses an overlong unknown sluice.dev/ annotation without measuring it against the known ones', async () => {
    const { checkAnnotationNames } = await import('../../../src/inject/annotations.ts');
    const key = `sluice.dev/${'x'.repeat(1_000_000)}`;
    expect(() => checkAnnotationNames({ [key]: 'v' })).toThrow(/^sluice\.dev\/x{69}… \(1000011 characters\): unknown annotation; known: /);
  });

  it('refuses a workload without containers, and leaves the input object as it was', () => {
    expect(() => injectWorkload({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [] } }, { settings })).toThrow('spec.containers is empty');
    expect(() => injectWorkload({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'd' }, spec: {} }, { settings })).toThrow('no pod template at spec.template');
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { containers: [{ name: 'a', ports: [{ containerPort: 80 }] }] } };
    const before = structuredClone(pod);
    const r = injectWorkload(pod, { settings });
    expect(r.kind).toBe('injected');
    expect(pod).toEqual(before);
  });

  it('with requireOptIn, injects only pods that say "true"', () => {
    const pod = (a: Record<string, string>) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', annotations: a }, spec: { containers: [{ name: 'a' }] } });
    expect(injectWorkload(pod({}), { settings, requireOptIn: true })).toMatchObject({ kind: 'skipped', reason: 'not opted in (sluice.dev/inject: "true")' });
    expect(injectWorkload(pod({ 'sluice.dev/inject': 'true' }), { settings, requireOptIn: true }).kind).toBe('injected');
    expect(injectWorkload(pod({}), { settings }).kind).toBe('injected');
  });

  it('keeps a grace period long enough to drain, and never shortens one', () => {
    const pod = (grace?: number) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { terminationGracePeriodSeconds: grace, containers: [{ name: 'a' }] } });
    const grace = (g?: number) => {
      const r = injectWorkload(pod(g), { settings });
      return r.kind === 'injected' ? (r.object.spec as { terminationGracePeriodSeconds?: number }).terminationGracePeriodSeconds : 'not injected';
    };
    expect(grace(5)).toBe(25);
    expect(grace(60)).toBe(60);
    expect(grace(undefined)).toBeUndefined(); // the default, 30 s, is enough
  });
});
