// gRPC's wire conventions as the stack reads and writes them, and how gRPC answers are judged.
import { describe, expect, it } from 'vitest';
import { classifyResponse, isRetryable } from '../../../src/stack/classify.ts';
import { SluiceError, toLocalReply } from '../../../src/stack/errors.ts';
import {
  encodeGrpcMessage,
  formatGrpcTimeout,
  grpcStatusOf,
  isGrpcContentType,
  parseGrpcTimeout,
  parsePushbackMs,
} from '../../../src/stack/grpc.ts';
import { parseGrpcDeadline, tighter } from '../../../src/policies/timeout/deadline.ts';
import { policyOf, doc, errorsOf } from '../policy/helpers.ts';

describe('grpc-timeout', () => {
  it.each([
    ['100m', 100],
    ['5S', 5000],
    ['2M', 120_000],
    ['1H', 3_600_000],
    ['1500u', 1.5],
    ['99999999n', 99.999999],
  ])('reads %s as %d ms', (value, ms) => {
    expect(parseGrpcTimeout(value)).toEqual({ kind: 'ok', ms });
  });

  it.each(['', 'S', '100', '100x', '123456789m', '-5S', '1.5S'])('refuses %j with the reason', (value) => {
    const t = parseGrpcTimeout(value);
    expect(t.kind).toBe('invalid');
  });

  it('writes whole milliseconds while they fit in 8 digits, seconds beyond', () => {
    expect(formatGrpcTimeout(1234.9)).toBe('1234m');
    expect(formatGrpcTimeout(-3)).toBe('0m');
    expect(formatGrpcTimeout(200_000_000)).toBe('200000S');
  });

  it('is a deadline like the deadline header: capped, expired at zero, the tighter of both wins', () => {
    expect(parseGrpcDeadline('10S', 2000)).toEqual({ kind: 'ok', remainingMs: 2000 });
    expect(parseGrpcDeadline('0m', undefined)).toEqual({ kind: 'expired' });
    expect(parseGrpcDeadline('500u', undefined)).toEqual({ kind: 'expired' });
    expect(parseGrpcDeadline('2x', undefined).kind).toBe('invalid');
    expect(tighter({ kind: 'ok', remainingMs: 300 }, { kind: 'ok', remainingMs: 100 })).toEqual({ kind: 'ok', remainingMs: 100 });
    expect(tighter({ kind: 'none' }, { kind: 'ok', remainingMs: 100 })).toEqual({ kind: 'ok', remainingMs: 100 });
    expect(tighter({ kind: 'ok', remainingMs: 100 }, { kind: 'expired' })).toEqual({ kind: 'expired' });
  });
});

describe('gRPC recognition and messages', () => {
  it.each([
    ['application/grpc', true],
    ['application/grpc+proto', true],
    ['application/grpc;charset=utf-8', true],
    ['application/grpc-web', false],
    ['application/grpcx', false],
    ['application/json', false],
  ])('%s is gRPC: %s', (ct, grpc) => {
    expect(isGrpcContentType(ct)).toBe(grpc);
  });

  it('reads grpc-status only when it is a status', () => {
    expect(grpcStatusOf({ 'grpc-status': '14' })).toBe(14);
    expect(grpcStatusOf({ 'grpc-status': '0' })).toBe(0);
    expect(grpcStatusOf({ 'grpc-status': '17' })).toBeUndefined();
    expect(grpcStatusOf({ 'grpc-status': 'x' })).toBeUndefined();
    expect(grpcStatusOf({})).toBeUndefined();
  });

  it('percent-encodes grpc-message as the spec says', () => {
    expect(encodeGrpcMessage('no credit: 100% used')).toBe('no credit: 100%25 used');
    expect(encodeGrpcMessage('naïve\n')).toBe('na%C3%AFve%0A');
  });

  it('reads grpc-retry-pushback-ms: a wait, or stop for anything else', () => {
    expect(parsePushbackMs('250')).toBe(250);
    expect(parsePushbackMs(undefined)).toBeUndefined();
    expect(parsePushbackMs('-1')).toBe('stop');
    expect(parsePushbackMs('soon')).toBe('stop');
  });
});

describe('gRPC local replies', () => {
  it.each([
    ['circuit-open', 14],
    ['no-credit', 14],
    ['shed', 14],
    ['rate-limited', 8],
    ['deadline-exceeded', 4],
    ['per-try-timeout', 4],
    ['connect-failure', 14],
    ['bad-request', 13],
  ] as const)('%s is grpc-status %d, trailers-only', (code, status) => {
    const reply = toLocalReply(new SluiceError(code), true);
    expect(reply.statusCode).toBe(200);
    expect(reply.body).toBeNull();
    expect(reply.headers['content-type']).toBe('application/grpc');
    expect(reply.headers['grpc-status']).toBe(String(status));
    expect(reply.headers['sluice-error']).toBe(code);
  });

  it('tells a gRPC client when to come back, in its own header', () => {
    const reply = toLocalReply(new SluiceError('no-credit', undefined, { retryAfterS: 0.04 }), true);
    expect(reply.headers['grpc-retry-pushback-ms']).toBe('40');
    expect(reply.headers['retry-after']).toBeUndefined();
  });
});

describe('judging gRPC answers', () => {
  const retry = policyOf('outbound:\n  defaults:\n    retry: {retryOnGrpcStatuses: [UNAVAILABLE, RESOURCE_EXHAUSTED]}').outbound.defaults.retry;

  it('an HTTP 200 with grpc-status 14 is an UNAVAILABLE failure, retried as listed', () => {
    const v = classifyResponse(200, { 'grpc-status': '14' });
    expect(v).toMatchObject({ failure: true, kind: 'grpc', reason: 'grpc_unavailable', grpcStatus: 14 });
    expect(isRetryable(v, 200, retry!)).toBe(true);
  });

  it("a gRPC status that is the caller's problem is no failure; listed, it is still retried", () => {
    expect(classifyResponse(200, { 'grpc-status': '3' })).toMatchObject({ failure: false, reason: 'grpc_invalid_argument' });
    const exhausted = classifyResponse(200, { 'grpc-status': '8' });
    expect(exhausted.failure).toBe(false);
    expect(isRetryable(exhausted, 200, retry!)).toBe(true);
    expect(isRetryable(classifyResponse(200, { 'grpc-status': '13' }), 200, retry!)).toBe(false);
  });

  it('OK, or no grpc-status yet, is a success', () => {
    expect(classifyResponse(200, { 'grpc-status': '0' }).failure).toBe(false);
    expect(classifyResponse(200, { 'content-type': 'application/grpc' }).reason).toBe('ok');
  });

  it("a peer sidecar's gRPC push-back is no failure of the upstream", () => {
    const v = classifyResponse(200, { 'grpc-status': '14', 'sluice-error': 'no-credit' });
    expect(v).toMatchObject({ failure: false, reason: 'pushback', grpcStatus: 14 });
    expect(isRetryable(v, 200, retry!)).toBe(true);
  });
});

describe('policy', () => {
  it('reads protocol per upstream and for the app, auto by default', () => {
    const p = policyOf(
      'inbound:\n  app: {address: 127.0.0.1, port: 9000, protocol: http2}\noutbound:\n  upstreams:\n    - {name: a, hosts: [a], endpoints: ["127.0.0.1:1"], protocol: http1}\n    - {name: b, hosts: [b], endpoints: ["127.0.0.1:2"]}',
    );
    expect(p.inbound.appProtocol).toBe('http2');
    expect(p.outbound.upstreams.map((u) => u.protocol)).toEqual(['http1', 'auto']);
    expect(p.outbound.defaults.retry?.retryOnGrpcStatuses).toEqual(['UNAVAILABLE']);
  });

  it('names the field, the line and the choices for a bad protocol or gRPC status', () => {
    expect(errorsOf(doc('outbound:\n  defaults:\n    protocol: h3\n    retry: {retryOnGrpcStatuses: [unavailable]}'))).toEqual([
      't.yaml:8:17: spec.outbound.defaults.protocol: must be one of auto, http1, http2, got "h3"',
      expect.stringMatching(/^t\.yaml:9:37: spec\.outbound\.defaults\.retry\.retryOnGrpcStatuses\[0\]: must be one of CANCELLED, UNKNOWN, .*got "unavailable"; did you mean UNAVAILABLE\?$/),
    ]);
  });
});
