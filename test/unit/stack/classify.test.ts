import http2 from 'node:http2';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, errors } from 'undici';
import { describe, expect, it } from 'vitest';
import type { RetryPolicy } from '../../../src/policy/types.ts';
import { classifyError, classifyResponse, isRetryable, VERDICT_REASONS, type Verdict } from '../../../src/stack/classify.ts';
import { type LocalReplyCode, SluiceError } from '../../../src/stack/errors.ts';

// Exported by undici at runtime (the base of RequestAbortedError) but missing from its typings.
const UndiciAbortError = (errors as unknown as { AbortError: new () => Error }).AbortError;

/** A Node system error as net/dns raise it: message, code, errno, syscall. */
function sysError(code: string, syscall: string, extra: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(`${syscall} ${code} 10.0.0.1:80`), { code, errno: -1, syscall, ...extra });
}

function h2StreamError(rstName: string, rstCode?: number): Error {
  const e = Object.assign(new Error(`Stream closed with error code ${rstName}`), { code: 'ERR_HTTP2_STREAM_ERROR' });
  return rstCode === undefined ? e : Object.assign(e, { http2ErrorCode: rstCode });
}

function summary(v: Verdict): [boolean, string | undefined, string] {
  return [v.failure, v.kind, v.reason];
}

describe('classifyResponse', () => {
  it.each([
    [100, false, undefined, 'ok'],
    [200, false, undefined, 'ok'],
    [204, false, undefined, 'ok'],
    [304, false, undefined, 'ok'],
    [404, false, undefined, 'ok'],
    [429, false, undefined, 'ok'],
    [499, false, undefined, 'ok'],
    [500, true, 'status', 'status_500'],
    [502, true, 'status', 'status_502'],
    [503, true, 'status', 'status_503'],
    [504, true, 'status', 'status_504'],
    [599, true, 'status', 'status_599'],
    [600, true, 'protocol', 'status_invalid'],
    [99, true, 'protocol', 'status_invalid'],
    [200.5, true, 'protocol', 'status_invalid'],
    [Number.NaN, true, 'protocol', 'status_invalid'],
  ])('%s → failure=%s kind=%s reason=%s', (status, failure, kind, reason) => {
    expect(summary(classifyResponse(status))).toEqual([failure, kind, reason]);
  });

  it('returns interned, frozen verdicts (no per-call allocation)', () => {
    expect(classifyResponse(503)).toBe(classifyResponse(503));
    expect(classifyResponse(200)).toBe(classifyResponse(404));
    expect(Object.isFrozen(classifyResponse(503))).toBe(true);
  });

  it('declares every reason up front, once', () => {
    // ok, 9 error kinds, 100 5xx statuses, 16 non-OK gRPC statuses.
    expect(VERDICT_REASONS).toHaveLength(126);
    expect(new Set(VERDICT_REASONS).size).toBe(VERDICT_REASONS.length);
    for (let s = 100; s < 600; s++) expect(VERDICT_REASONS).toContain(classifyResponse(s).reason);
  });
});

describe('classifyError: undici v8 errors', () => {
  it.each<[string, unknown, boolean, string, string]>([
    ['ConnectTimeoutError', new errors.ConnectTimeoutError(), true, 'connect-failure', 'connect_failure'],
    ['SocketError other side closed', new errors.SocketError('other side closed'), true, 'reset', 'reset'],
    ['SocketError closed', new errors.SocketError('closed'), true, 'reset', 'reset'],
    [
      'SocketError HTTP/2 GOAWAY',
      new errors.SocketError('HTTP/2: "GOAWAY" frame received with code 2'),
      true,
      'reset',
      'reset',
    ],
    ['HeadersTimeoutError', new errors.HeadersTimeoutError(), true, 'per-try-timeout', 'per_try_timeout'],
    ['BodyTimeoutError', new errors.BodyTimeoutError(), true, 'protocol', 'protocol'],
    ['HeadersOverflowError', new errors.HeadersOverflowError(), true, 'protocol', 'protocol'],
    ['HTTPParserError', new errors.HTTPParserError('Invalid status code'), true, 'protocol', 'protocol'],
    ['ResponseContentLengthMismatchError', new errors.ResponseContentLengthMismatchError(), true, 'protocol', 'protocol'],
    ['InformationalError without cause', new errors.InformationalError('HTTP/2: stream half-closed'), true, 'protocol', 'protocol'],
    ['RequestAbortedError', new errors.RequestAbortedError(), false, 'aborted', 'aborted'],
    ['AbortError', new UndiciAbortError(), false, 'aborted', 'aborted'],
    ['ClientDestroyedError (our pool closed)', new errors.ClientDestroyedError(), false, 'local', 'local'],
    ['ClientClosedError (our pool closed)', new errors.ClientClosedError(), false, 'local', 'local'],
    ['RequestContentLengthMismatchError (client body)', new errors.RequestContentLengthMismatchError(), false, 'local', 'local'],
  ])('%s', (_name, err, failure, kind, reason) => {
    expect(summary(classifyError(err))).toEqual([failure, kind, reason]);
  });
});

describe('classifyError: Node socket, DNS and HTTP/2 errors', () => {
  it.each<[string, unknown, boolean, string]>([
    ['ECONNREFUSED', sysError('ECONNREFUSED', 'connect'), true, 'connect-failure'],
    ['EHOSTUNREACH', sysError('EHOSTUNREACH', 'connect'), true, 'connect-failure'],
    ['ENETUNREACH', sysError('ENETUNREACH', 'connect'), true, 'connect-failure'],
    ['EADDRNOTAVAIL', sysError('EADDRNOTAVAIL', 'connect'), true, 'connect-failure'],
    ['ENOTFOUND', sysError('ENOTFOUND', 'getaddrinfo'), true, 'connect-failure'],
    ['EAI_AGAIN', sysError('EAI_AGAIN', 'getaddrinfo'), true, 'connect-failure'],
    ['ETIMEDOUT on connect', sysError('ETIMEDOUT', 'connect'), true, 'connect-failure'],
    ['ETIMEDOUT without syscall', Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' }), true, 'connect-failure'],
    ['ETIMEDOUT on read (connection died)', sysError('ETIMEDOUT', 'read'), true, 'reset'],
    ['ECONNRESET', sysError('ECONNRESET', 'read'), true, 'reset'],
    ['EPIPE', sysError('EPIPE', 'write'), true, 'reset'],
    ['ECONNABORTED', sysError('ECONNABORTED', 'read'), true, 'reset'],
    [
      'AggregateError from autoSelectFamily (code copied)',
      Object.assign(new AggregateError([sysError('ECONNREFUSED', 'connect')]), { code: 'ECONNREFUSED' }),
      true,
      'connect-failure',
    ],
    [
      'AggregateError without a code',
      new AggregateError([sysError('EHOSTUNREACH', 'connect'), sysError('ECONNREFUSED', 'connect')]),
      true,
      'connect-failure',
    ],
    ['REFUSED_STREAM by message', h2StreamError('NGHTTP2_REFUSED_STREAM'), true, 'refused-stream'],
    ['REFUSED_STREAM by undici http2ErrorCode', h2StreamError('7', 7), true, 'refused-stream'],
    ['other RST_STREAM (CANCEL)', h2StreamError('NGHTTP2_CANCEL', 8), true, 'reset'],
    [
      'HTTP/2 session error (GOAWAY with error)',
      Object.assign(new Error('Session closed with error code 2'), { code: 'ERR_HTTP2_SESSION_ERROR' }),
      true,
      'reset',
    ],
    ['DOMException AbortError', new DOMException('This operation was aborted', 'AbortError'), false, 'aborted'],
    ['unknown code', Object.assign(new Error('weird'), { code: 'ERR_SOMETHING_NEW' }), true, 'protocol'],
    ['plain Error', new Error('boom'), true, 'protocol'],
    ['a string', 'boom', true, 'protocol'],
    ['undefined', undefined, true, 'protocol'],
    ['null', null, true, 'protocol'],
    ['an empty object', {}, true, 'protocol'],
  ])('%s', (_name, err, failure, kind) => {
    const v = classifyError(err);
    expect([v.failure, v.kind]).toEqual([failure, kind]);
  });

  it("Node's own AbortError (code ABORT_ERR) is aborted", async () => {
    const err = await sleep(1000, undefined, { signal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('ABORT_ERR');
    expect(summary(classifyError(err))).toEqual([false, 'aborted', 'aborted']);
  });
});

describe('classifyError: SluiceError', () => {
  it.each<[LocalReplyCode, boolean, string]>([
    ['connect-failure', true, 'connect-failure'],
    ['upstream-reset', true, 'reset'],
    ['per-try-timeout', true, 'per-try-timeout'],
    ['upstream-error', true, 'protocol'],
    ['bad-request', false, 'local'],
    ['no-route', false, 'local'],
    ['deadline-exceeded', false, 'local'],
    ['idle-timeout', false, 'local'],
    ['draining', false, 'local'],
    ['overloaded', false, 'local'],
    ['client-closed', false, 'aborted'],
  ])('%s → failure=%s kind=%s', (code, failure, kind) => {
    const v = classifyError(new SluiceError(code));
    expect([v.failure, v.kind]).toEqual([failure, kind]);
  });

  it('a local decision wins over the cause it wraps', () => {
    const shed = new SluiceError('overloaded', 'queue full', { cause: sysError('ECONNRESET', 'read') });
    expect(classifyError(shed).kind).toBe('local');
  });

  it('an upstream code is refined by a failure in its cause', () => {
    // As the upstream client wraps undici errors: a refused stream travels as upstream-reset.
    const refused = new SluiceError('upstream-reset', 'x', { cause: h2StreamError('NGHTTP2_REFUSED_STREAM', 7) });
    expect(summary(classifyError(refused))).toEqual([true, 'refused-stream', 'refused_stream']);
    const reset = new SluiceError('upstream-error', 'x', { cause: sysError('ECONNRESET', 'read') });
    expect(classifyError(reset).kind).toBe('reset');
    const wrapped = new SluiceError('upstream-error', 'x', {
      cause: new errors.InformationalError('w', { cause: new errors.ConnectTimeoutError() }),
    });
    expect(classifyError(wrapped).kind).toBe('connect-failure');
    const unknown = new SluiceError('upstream-reset', 'x', { cause: new Error('what') });
    expect(classifyError(unknown).kind).toBe('reset');
  });

  it('a specific upstream code is never downgraded by a non-failure cause', () => {
    const timedOut = new SluiceError('per-try-timeout', undefined, { cause: new errors.RequestAbortedError() });
    expect(classifyError(timedOut).kind).toBe('per-try-timeout');
    const reset = new SluiceError('upstream-reset', undefined, { cause: new errors.ClientDestroyedError() });
    expect(classifyError(reset).kind).toBe('reset');
  });

  it('the catch-all upstream-error lets its cause decide outright', () => {
    const destroyed = new SluiceError('upstream-error', 'x', { cause: new errors.ClientDestroyedError() });
    expect(summary(classifyError(destroyed))).toEqual([false, 'local', 'local']);
    const aborted = new SluiceError('upstream-error', 'x', { cause: new DOMException('gone', 'AbortError') });
    expect(classifyError(aborted).failure).toBe(false);
    const bare = new SluiceError('upstream-error', 'x', { cause: new Error('what') });
    expect(classifyError(bare).kind).toBe('protocol');
  });

  it('a SluiceError used as an abort reason (what undici rethrows) keeps its meaning', () => {
    expect(classifyError(new SluiceError('deadline-exceeded')).failure).toBe(false);
  });
});

describe('classifyError: cause chains', () => {
  it('looks through undici wrappers', () => {
    const wrapped = new errors.InformationalError('HTTP/2: stream errored', { cause: sysError('ECONNRESET', 'read') });
    expect(classifyError(wrapped).kind).toBe('reset');
    const goaway = new errors.SocketError('The session has been destroyed');
    (goaway as { cause?: unknown }).cause = Object.assign(new Error('GOAWAY'), { code: 'ERR_HTTP2_GOAWAY_SESSION' });
    expect(classifyError(goaway).kind).toBe('reset');
    const aborted = new errors.InformationalError('aborted', { cause: new errors.RequestAbortedError() });
    expect(classifyError(aborted).kind).toBe('aborted');
    const refused = new errors.InformationalError('HTTP/2 stream error', { cause: h2StreamError('NGHTTP2_REFUSED_STREAM') });
    expect(classifyError(refused).kind).toBe('refused-stream');
  });

  it('follows two levels of cause, not more', () => {
    const reset = sysError('ECONNRESET', 'read');
    const two = new Error('outer', { cause: new Error('middle', { cause: reset }) });
    expect(classifyError(two).kind).toBe('reset');
    const three = new Error('outer', { cause: new Error('a', { cause: new Error('b', { cause: reset }) }) });
    expect(classifyError(three).kind).toBe('protocol');
  });

  it('survives a cause cycle', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(classifyError(a).kind).toBe('protocol');
  });

  it('stops at a recognised outer error', () => {
    const outer = new errors.HeadersTimeoutError();
    (outer as { cause?: unknown }).cause = sysError('ECONNREFUSED', 'connect');
    expect(classifyError(outer).kind).toBe('per-try-timeout');
  });
});

describe('classifyError: errors captured from real sockets', () => {
  async function listen(server: net.Server | http2.Http2Server): Promise<number> {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  }

  it('connection refused (undici passes the Node error through)', async () => {
    const server = net.createServer();
    const port = await listen(server);
    await new Promise((resolve) => server.close(resolve));
    const client = new Client(`http://127.0.0.1:${port}`);
    const err = await client.request({ method: 'GET', path: '/' }).catch((e: unknown) => e);
    await client.destroy();
    expect((err as { code?: string }).code).toBe('ECONNREFUSED');
    expect(classifyError(err).kind).toBe('connect-failure');
  });

  it('upstream closes the socket before answering', async () => {
    const server = net.createServer((socket) => socket.once('data', () => socket.destroy()));
    const port = await listen(server);
    const client = new Client(`http://127.0.0.1:${port}`);
    const err = await client.request({ method: 'GET', path: '/' }).catch((e: unknown) => e);
    await client.destroy();
    server.close();
    expect((err as { code?: string }).code).toBe('UND_ERR_SOCKET');
    expect(classifyError(err).kind).toBe('reset');
  });

  it('HTTP/2 REFUSED_STREAM (undici retries it once, then surfaces it)', async () => {
    const server = http2.createServer();
    server.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    });
    const port = await listen(server);
    const client = new Client(`http://127.0.0.1:${port}`, { allowH2: true, h2Options: { useH2c: true } });
    const err = await client.request({ method: 'POST', path: '/', body: 'x' }).catch((e: unknown) => e);
    await client.destroy();
    server.close();
    expect((err as { code?: string }).code).toBe('ERR_HTTP2_STREAM_ERROR');
    expect(summary(classifyError(err))).toEqual([true, 'refused-stream', 'refused_stream']);
  });

  it('the client goes away: an aborted signal rejects with a DOMException', async () => {
    const server = net.createServer(() => {}); // accepts and never answers
    const port = await listen(server);
    const client = new Client(`http://127.0.0.1:${port}`);
    const controller = new AbortController();
    const pending = client.request({ method: 'GET', path: '/', signal: controller.signal }).catch((e: unknown) => e);
    controller.abort();
    const err = await pending;
    await client.destroy();
    server.close();
    expect(summary(classifyError(err))).toEqual([false, 'aborted', 'aborted']);
  });
});

describe('isRetryable', () => {
  const policy: RetryPolicy = {
    maxAttempts: 3,
    retryOn: ['connect-failure', 'refused-stream'],
    retryOnStatuses: [503, 429],
    retryOnGrpcStatuses: ['UNAVAILABLE'],
    backoff: { baseMs: 25, capMs: 250 },
    retryAfterMaxMs: 1000,
    bufferLimitBytes: 65536,
    retryNonIdempotent: false,
  };

  it.each<[string, Verdict, number | undefined, boolean]>([
    ['listed condition', classifyError(sysError('ECONNREFUSED', 'connect')), undefined, true],
    ['listed condition: refused stream', classifyError(h2StreamError('NGHTTP2_REFUSED_STREAM')), undefined, true],
    ['unlisted condition: reset', classifyError(sysError('ECONNRESET', 'read')), undefined, false],
    ['unlisted condition: per-try timeout', classifyError(new errors.HeadersTimeoutError()), undefined, false],
    ['listed status 503', classifyResponse(503), 503, true],
    ['unlisted status 500', classifyResponse(500), 500, false],
    ['listed non-5xx status 429', classifyResponse(429), 429, true],
    ['success 200', classifyResponse(200), 200, false],
    ['status verdict without a status', classifyResponse(503), undefined, false],
    ['protocol failure', classifyError(new Error('boom')), undefined, false],
    ['invalid status', classifyResponse(600), 600, false],
    ['local refusal', classifyError(new SluiceError('overloaded')), undefined, false],
    ['client went away', classifyError(new errors.RequestAbortedError()), undefined, false],
  ])('%s → %s', (_name, verdict, status, expected) => {
    expect(isRetryable(verdict, status, policy)).toBe(expected);
  });

  it('per-try timeout and reset retry when listed', () => {
    const all: RetryPolicy = { ...policy, retryOn: ['reset', 'per-try-timeout'] };
    expect(isRetryable(classifyError(new errors.SocketError('other side closed')), undefined, all)).toBe(true);
    expect(isRetryable(classifyError(new SluiceError('per-try-timeout')), undefined, all)).toBe(true);
    expect(isRetryable(classifyError(sysError('ECONNREFUSED', 'connect')), undefined, all)).toBe(false);
  });
});

describe('a peer sidecar\'s push-back', () => {
  it.each(['shed', 'overloaded', 'no-credit', 'rate-limited', 'deadline-too-short', 'draining'])(
    '503 with sluice-error: %s is no upstream failure, yet a listed status retries it',
    (code) => {
      const v = classifyResponse(503, { 'sluice-error': code });
      expect(v).toMatchObject({ failure: false, kind: 'status', reason: 'pushback' });
      expect(VERDICT_REASONS).toContain(v.reason);
    },
  );

  it('a 503 from the app itself, or naming another cause, is a failure', () => {
    expect(classifyResponse(503, {}).failure).toBe(true);
    expect(classifyResponse(503, { 'sluice-error': 'circuit-open' }).failure).toBe(true);
    expect(classifyResponse(500, { 'sluice-error': 'shed' }).failure).toBe(true);
  });
});
