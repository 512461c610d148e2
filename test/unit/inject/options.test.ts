// Annotation and resource parsing: table-driven, with the exact messages users see.
import { describe, expect, it } from 'vitest';
import { CONTROL_ADDRESS, sidecarOptions, TOKEN_SECRET, type InjectSettings } from '../../../src/inject/annotations.ts';
import { InjectError } from '../../../src/inject/errors.ts';
import { DEFAULT_RESOURCES, quantityValue, sidecarResources } from '../../../src/inject/resources.ts';

const SETTINGS: InjectSettings = { image: 'img:1', control: CONTROL_ADDRESS, tokenSecret: TOKEN_SECRET, legacy: false };
const APP = { first: 8080, byName: (n: string) => (n === 'grpc' ? 50051 : undefined) };

function options(a: Record<string, string>, settings = SETTINGS) {
  return sidecarOptions(a, settings, APP, 'orders');
}

function refusal(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(InjectError);
    return (err as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('sidecar options from annotations', () => {
  it('defaults: mesh ports, the first containerPort, the config service, loopback admin, native sidecar', () => {
    const o = options({});
    expect(o.ports).toEqual({ inbound: 15006, outbound: 15001, admin: 15000 });
    expect(o.appPort).toBe(8080);
    expect(o.source).toEqual({ kind: 'control', address: 'sluice-control.sluice-system.svc:15012', tokenSecret: 'sluice-control-token' });
    expect(o.adminAddress).toBe('127.0.0.1');
    expect(o.legacy).toBe(false);
    expect(o.resources).toEqual(DEFAULT_RESOURCES);
    expect(Object.isFrozen(o)).toBe(true);
  });

  it('annotations win over the command line, which wins over the defaults', () => {
    expect(options({}, { ...SETTINGS, legacy: true }).legacy).toBe(true);
    expect(options({ 'sluice.dev/legacy': 'false' }, { ...SETTINGS, legacy: true }).legacy).toBe(false);
    expect(options({}, { ...SETTINGS, control: 'off' }).source).toEqual({ kind: 'bundled' });
    expect(options({ 'sluice.dev/control': 'c:1' }, { ...SETTINGS, control: 'off' }).source).toEqual({ kind: 'control', address: 'c:1', tokenSecret: 'sluice-control-token' });
  });

  it('picks the policy source', () => {
    expect(options({ 'sluice.dev/policy-configmap': 'p' }).source).toEqual({ kind: 'configmap', name: 'p' });
    expect(options({ 'sluice.dev/policy-configmap': 'p', 'sluice.dev/control': 'off' }).source).toEqual({ kind: 'configmap', name: 'p' });
    expect(options({ 'sluice.dev/control-token-secret': 'mine' }).source).toMatchObject({ tokenSecret: 'mine' });
    expect(options({ 'sluice.dev/control': ' a:1 , [::1]:2 ' }).source).toMatchObject({ address: 'a:1,[::1]:2' });
  });

  it('traces: off by default; to the config service with its token, or to a collector URL', () => {
    expect(options({}).traces).toBeUndefined();
    expect(options({ 'sluice.dev/traces': 'control', 'sluice.dev/trace-sampling': '0.1' }).traces).toEqual({
      endpoint: 'http://sluice-control.sluice-system.svc:15014/v1/traces',
      withControlToken: true,
      sampling: 0.1,
    });
    expect(options({ 'sluice.dev/traces': 'http://otel-collector.observability:4318/v1/traces' }).traces).toEqual({
      endpoint: 'http://otel-collector.observability:4318/v1/traces',
      withControlToken: false,
      sampling: 1,
    });
  });

  it('reads the app port as a number, a containerPort name, or none', () => {
    expect(options({ 'sluice.dev/app-port': '9000' }).appPort).toBe(9000);
    expect(options({ 'sluice.dev/app-port': 'grpc' }).appPort).toBe(50051);
    expect(options({ 'sluice.dev/app-port': 'none' }).appPort).toBeUndefined();
    expect(sidecarOptions({}, SETTINGS, { first: undefined, byName: () => undefined }, 's').appPort).toBeUndefined();
  });

  const refusals: [string, Record<string, string>, string][] = [
    ['a typo', { 'sluice.dev/inbound-prot': '1' }, 'sluice.dev/inbound-prot: unknown annotation (did you mean sluice.dev/inbound-port?)'],
    ['an unknown name far from any', { 'sluice.dev/zzzzzzzzzzzzzzzz': '1' }, 'sluice.dev/zzzzzzzzzzzzzzzz: unknown annotation; known: sluice.dev/inject,'],
    ['a port out of range', { 'sluice.dev/inbound-port': '70000' }, 'sluice.dev/inbound-port: must be a port from 1 to 65535, got "70000"'],
    ['a port that is not a number', { 'sluice.dev/admin-port': '15k' }, 'sluice.dev/admin-port: must be a port from 1 to 65535, got "15k"'],
    ['two sidecar ports alike', { 'sluice.dev/admin-port': '15001' }, 'the outbound and admin ports are both 15001'],
    ['the app on a sidecar port', { 'sluice.dev/app-port': '15006' }, "the app port 15006 is also the sidecar's inbound port"],
    ['an unknown port name', { 'sluice.dev/app-port': 'web' }, 'sluice.dev/app-port: "web" is neither a port number, "none", nor the name of a containerPort of the app'],
    ['a bad boolean', { 'sluice.dev/legacy': 'yes' }, 'sluice.dev/legacy: must be "true" or "false", got "yes"'],
    ['a bad control address', { 'sluice.dev/control': 'sluice-control' }, 'sluice.dev/control: must be HOST:PORT[,HOST:PORT...] or "off", got "sluice-control"'],
    ['two policy sources', { 'sluice.dev/control': 'c:1', 'sluice.dev/policy-configmap': 'p' }, 'sluice.dev/policy-configmap and sluice.dev/control both name a policy source'],
    ['a bad ConfigMap name', { 'sluice.dev/policy-configmap': 'My_Policy' }, 'sluice.dev/policy-configmap: must be a Kubernetes object name'],
    ['a bad admin address', { 'sluice.dev/admin-address': '10.0.0.1' }, 'sluice.dev/admin-address: must be one of 127.0.0.1, ::1, 0.0.0.0, ::, got "10.0.0.1"'],
    ['a bad cpu', { 'sluice.dev/cpu': 'lots' }, 'sluice.dev/cpu: "lots" is not a Kubernetes quantity'],
    ['a zero memory', { 'sluice.dev/memory': '0' }, 'sluice.dev/memory: "0" must be more than 0'],
    ['three quantities', { 'sluice.dev/memory': '1Mi/2Mi/3Mi' }, 'sluice.dev/memory: expected one or two quantities'],
    ['a limit below the request', { 'sluice.dev/cpu': '2/500m' }, 'sluice.dev/cpu: the limit is below the request, got "2/500m"'],
    ['traces to a non-URL', { 'sluice.dev/traces': 'jaeger:4318' }, 'sluice.dev/traces: must be "off", "control" or an http(s) URL of an OTLP/HTTP traces endpoint, got "jaeger:4318"'],
    ['traces to control without one', { 'sluice.dev/control': 'off', 'sluice.dev/traces': 'control' }, 'sluice.dev/traces: "control" needs the sidecar to follow a config service (sluice.dev/control)'],
    ['a sampling ratio above 1', { 'sluice.dev/traces': 'control', 'sluice.dev/trace-sampling': '10' }, 'sluice.dev/trace-sampling: must be a ratio from 0 to 1, got "10"'],
    ['a sampling ratio with no traces', { 'sluice.dev/trace-sampling': '0.1' }, 'sluice.dev/trace-sampling needs sluice.dev/traces ("control" or a collector URL)'],
  ];
  for (const [what, a, message] of refusals) {
    it(`refuses ${what}`, () => {
      expect(refusal(() => options(a))).toContain(message);
    });
  }
});

describe('sidecar resources', () => {
  it('parses quantities in base units', () => {
    expect(quantityValue('250m')).toBe(0.25);
    expect(quantityValue('1')).toBe(1);
    expect(quantityValue('1.5')).toBe(1.5);
    expect(quantityValue('128Mi')).toBe(128 * 2 ** 20);
    expect(quantityValue('1G')).toBe(1e9);
    expect(quantityValue('1Qi')).toBeUndefined();
    expect(quantityValue('-1')).toBeUndefined();
    expect(quantityValue('')).toBeUndefined();
  });

  it('cpu: a request with no limit unless one is given; memory: one value is request and limit', () => {
    expect(sidecarResources(undefined, undefined)).toEqual({ requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } });
    expect(sidecarResources('200m', undefined)).toEqual({ requests: { cpu: '200m', memory: '128Mi' }, limits: { memory: '256Mi' } });
    expect(sidecarResources('200m/1', '192Mi')).toEqual({ requests: { cpu: '200m', memory: '192Mi' }, limits: { cpu: '1', memory: '192Mi' } });
    expect(sidecarResources(undefined, '128Mi/1Gi')).toEqual({ requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '1Gi' } });
  });
});
