import { describe, expect, it } from 'vitest';
import {
  appendForwarded,
  forwardRequestHeaders,
  hasVia,
  isValidAuthority,
  newRequestHeaderFacts as facts,
  stripResponseHopByHop,
} from '../../../src/proxy/headers.ts';

const VIA = '1.1 sluice-abc';
import { splitAbsolute } from '../../../src/proxy/listener.ts';
import { parseAuthority } from '../../../src/proxy/router.ts';


describe('forwardRequestHeaders', () => {
  it('drops every hop-by-hop field, and the fields Connection names', () => {
    const f = facts();
    const out = forwardRequestHeaders(
      [
        'Host', 'orders',
        'Connection', 'keep-alive, X-Secret',
        'connection', 'x-other',
        'Keep-Alive', 'timeout=5',
        'TE', 'gzip, trailers',
        'Transfer-Encoding', 'chunked',
        'Upgrade', 'websocket',
        'Proxy-Authorization', 'Basic x',
        'Proxy-Connection', 'keep-alive',
        'X-Secret', 's',
        'X-Other', 'o',
        'Accept', '*/*',
      ],
      'sluice-timeout-ms',
      f,
    );
    expect(out).toEqual(['Accept', '*/*']);
    expect(f).toMatchObject({ host: 'orders', chunked: true, upgrade: 'websocket' });
  });

  it("keeps TE only as 'trailers', the value HTTP/2 allows and gRPC needs end to end", () => {
    const f = facts();
    const out = forwardRequestHeaders([':path', '/x', 'TE', 'Trailers', 'grpc-timeout', '5S', 'content-type', 'application/grpc'], 'sluice-timeout-ms', f);
    expect(out).toEqual(['te', 'trailers', 'content-type', 'application/grpc']);
    expect(f).toMatchObject({ teTrailers: true, grpcTimeout: '5S', contentType: 'application/grpc' });
  });

  it('keeps forwarding positions right when Connection names a field before them', () => {
    const f = facts();
    const out = forwardRequestHeaders(['X-Hop', '1', 'X-Forwarded-For', '1.1.1.1', 'Connection', 'x-hop'], 'sluice-timeout-ms', f);
    appendForwarded(out, f, '2.2.2.2', 'orders', VIA);
    expect(out.slice(0, 2)).toEqual(['X-Forwarded-For', '1.1.1.1, 2.2.2.2']);
  });

  it('collects the facts the stack needs and keeps end-to-end fields in order', () => {
    const f = facts();
    const out = forwardRequestHeaders(
      ['Content-Length', '3', 'Idempotency-Key', 'k1', 'Sluice-Timeout-Ms', '250', 'Expect', '100-continue', 'Trailer', 'x-sum'],
      'sluice-timeout-ms',
      f,
    );
    expect(out).toEqual(['Content-Length', '3', 'Idempotency-Key', 'k1', 'Trailer', 'x-sum']);
    expect(f).toMatchObject({ contentLength: '3', idempotencyKey: 'k1', deadline: '250', expectContinue: true });
  });
});

describe('appendForwarded', () => {
  it('adds Via, X-Forwarded-* and Forwarded for a new request', () => {
    const f = facts();
    const h = forwardRequestHeaders(['Host', 'orders'], 'sluice-timeout-ms', f);
    appendForwarded(h, f, '10.1.2.3', 'orders', VIA);
    expect(h).toEqual([
      'via', VIA,
      'x-forwarded-for', '10.1.2.3',
      'x-forwarded-proto', 'http',
      'x-forwarded-host', 'orders',
      'forwarded', 'for=10.1.2.3;host="orders";proto=http',
    ]);
  });

  it('appends to an existing chain and brackets IPv6 in Forwarded', () => {
    const f = facts();
    const h = forwardRequestHeaders(
      ['X-Forwarded-For', '1.1.1.1', 'Forwarded', 'for=1.1.1.1', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', 'a', 'Via', '1.0 fred'],
      'sluice-timeout-ms',
      f,
    );
    appendForwarded(h, f, '::1', 'b', VIA);
    expect(h).toEqual([
      'X-Forwarded-For', '1.1.1.1, ::1',
      'Forwarded', 'for=1.1.1.1, for="[::1]";host="b";proto=http',
      'X-Forwarded-Proto', 'https',
      'X-Forwarded-Host', 'a',
      'Via', `1.0 fred, ${VIA}`,
    ]);
  });

  it('recognises its own Via token, and only its own', () => {
    const f = facts();
    const h = forwardRequestHeaders(['Via', `1.1 other, ${VIA}`], 'sluice-timeout-ms', f);
    expect(hasVia(h, f, VIA)).toBe(true);
    expect(hasVia(h, f, '1.1 sluice-def')).toBe(false);
    const g = facts();
    expect(hasVia(forwardRequestHeaders([], 'x', g), g, VIA)).toBe(false);
  });

  it.each([
    ['orders', true],
    ['orders.default.svc.cluster.local:8080', true],
    ['my_host:80', true],
    ['[::1]:9000', true],
    ['127.0.0.1', true],
    ['', false],
    ['a", for=6.6.6.6;host="b', false],
    ['user@orders', false],
    ['orders:80:90', false],
    ['orders/x', false],
  ])('isValidAuthority(%j) is %s', (authority, valid) => {
    expect(isValidAuthority(authority)).toBe(valid);
  });
});

describe('stripResponseHopByHop', () => {
  it('removes hop-by-hop fields and those named in Connection, keeps Trailer', () => {
    const h: Record<string, string | string[] | undefined> = {
      connection: 'keep-alive, x-hop',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      'x-hop': '1',
      trailer: 'x-sum',
      'content-type': 'text/plain',
    };
    stripResponseHopByHop(h);
    expect(h).toEqual({ trailer: 'x-sum', 'content-type': 'text/plain' });
  });
});

describe('request targets', () => {
  it.each([
    ['http://orders/a?b=1', { authority: 'orders', path: '/a?b=1' }],
    ['http://orders:8080', { authority: 'orders:8080', path: '/' }],
    ['http://orders?x', { authority: 'orders', path: '/?x' }],
    ['http://[::1]:9000/p', { authority: '[::1]:9000', path: '/p' }],
    ['https://orders/', undefined],
    ['*', undefined],
  ])('splitAbsolute(%s)', (url, expected) => {
    expect(splitAbsolute(url)).toEqual(expected);
  });

  it.each([
    ['orders', { host: 'orders', port: 80 }],
    ['orders:8080', { host: 'orders', port: 8080 }],
    ['[::1]:9000', { host: '::1', port: 9000 }],
    ['127.0.0.1:0', undefined],
    ['orders:99999', undefined],
    ['user@orders', undefined],
    ['', undefined],
  ])('parseAuthority(%s)', (authority, expected) => {
    expect(parseAuthority(authority)).toEqual(expected);
  });
});
