// What is kept of an outcome, what a replay looks like, and the Redis encoding of key states.
import { describe, expect, it } from 'vitest';
import { decodeShared, encodeDone, encodeInFlight, encodeUnreplayable, redisKey } from '../../../../src/policies/idempotency/redis-codec.ts';
import {
  isStorableStatus,
  keptHeaders,
  replayResponse,
  storedBytes,
  type StoredResponse,
} from '../../../../src/policies/idempotency/stored-response.ts';
import { readBody } from './fake-body.ts';

describe('what is stored', () => {
  it.each([
    [200, true],
    [201, true],
    [302, true],
    [400, true],
    [404, true],
    [409, true],
    [422, true],
    [408, false],
    [425, false],
    [429, false],
    [500, false],
    [502, false],
    [503, false],
  ])('status %i storable: %s', (status, storable) => {
    expect(isStorableStatus(status)).toBe(storable);
  });

  it('drops message-level headers, keeps the outcome\'s own, copies arrays', () => {
    const cookies = ['a=1', 'b=2'];
    const kept = keptHeaders(
      {
        'content-type': 'application/json',
        'content-length': '12',
        date: 'Mon, 01 Jan 2024 00:00:00 GMT',
        connection: 'keep-alive',
        'transfer-encoding': 'chunked',
        'set-cookie': cookies,
        location: '/orders/7',
        'x-absent': undefined,
      },
      true,
    );
    expect(kept).toEqual({ 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'], location: '/orders/7' });
    cookies.push('c=3');
    expect(kept['set-cookie']).toEqual(['a=1', 'b=2']);
  });

  it('a body-less answer keeps its Content-Length (HEAD)', () => {
    expect(keptHeaders({ 'content-length': '512' }, false)).toEqual({ 'content-length': '512' });
  });

  it('counts body, header and trailer bytes', () => {
    const r: StoredResponse = { statusCode: 200, headers: { ab: 'cd', e: ['f', 'g'] }, body: Buffer.alloc(10), trailers: { t: 'u' } };
    expect(storedBytes(r)).toBe(10 + 4 + 2 + 2 + 2);
  });
});

describe('replays', () => {
  it('a Buffer body with its own Content-Length and the replay mark, in a fresh header object', () => {
    const stored: StoredResponse = { statusCode: 201, headers: { 'content-type': 'text/plain' }, body: Buffer.from('hello'), trailers: null };
    const a = replayResponse(stored);
    expect(a).toEqual({
      statusCode: 201,
      headers: { 'content-type': 'text/plain', 'content-length': '5', 'sluice-idempotent-replay': 'true' },
      body: Buffer.from('hello'),
    });
    (a.headers as Record<string, string>)['x-added-outside'] = '1';
    expect(replayResponse(stored).headers['x-added-outside']).toBeUndefined();
  });

  it('a body with trailers streams once, ending with them', async () => {
    const stored: StoredResponse = { statusCode: 200, headers: { trailer: 'x-sum' }, body: Buffer.from('data'), trailers: { 'x-sum': 'abc' } };
    const r = replayResponse(stored);
    expect(Buffer.isBuffer(r.body)).toBe(false);
    expect(r.headers['content-length']).toBeUndefined();
    expect(await readBody(r)).toEqual({ body: Buffer.from('data'), trailers: { 'x-sum': 'abc' } });
  });

  it('no body stays no body', () => {
    expect(replayResponse({ statusCode: 204, headers: {}, body: null, trailers: null }).body).toBeNull();
  });
});

describe('redis encoding', () => {
  it('round-trips a completed outcome with a binary body', () => {
    const body = Buffer.from([0, 255, 10, 13, 0x80, 0xc3, 0x28]);
    const r: StoredResponse = { statusCode: 200, headers: { 'content-type': 'application/octet-stream', 'set-cookie': ['a', 'b'] }, body, trailers: { t: 'v' } };
    expect(decodeShared(encodeDone('POST h/p', r))).toEqual({ kind: 'done', fingerprint: 'POST h/p', response: r });
  });

  it('keeps null and empty bodies apart', () => {
    const none: StoredResponse = { statusCode: 204, headers: {}, body: null, trailers: null };
    const empty: StoredResponse = { ...none, statusCode: 200, body: Buffer.alloc(0) };
    expect(decodeShared(encodeDone('f', none))).toMatchObject({ response: { body: null } });
    expect(decodeShared(encodeDone('f', empty))).toMatchObject({ response: { body: Buffer.alloc(0) } });
  });

  it('in-flight and unreplayable markers', () => {
    expect(decodeShared(encodeInFlight('owner.1', 'PUT h/x'))).toEqual({ kind: 'in-flight', fingerprint: 'PUT h/x' });
    expect(decodeShared(encodeUnreplayable('PUT h/x'))).toEqual({ kind: 'unreplayable', fingerprint: 'PUT h/x' });
  });

  it('reads nothing it did not write', () => {
    expect(decodeShared(Buffer.from('hello'))).toBeUndefined();
    expect(decodeShared(Buffer.from([0x44, 0, 0, 0, 99, 1]))).toBeUndefined();
    expect(decodeShared(Buffer.from('I{not json'))).toBeUndefined();
  });

  it('key names are fixed-length hashes under the prefix', () => {
    const k = redisKey('svc', 'x'.repeat(5000));
    expect(k).toMatch(/^svc:idempotency:v1:[A-Za-z0-9_-]{43}$/);
    expect(redisKey('svc', 'a')).not.toBe(redisKey('svc', 'b'));
  });
});
