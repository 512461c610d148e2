// Idempotency-Key dedupe through a whole sidecar: real sockets, the policy parsed from YAML, and
// a scripted app that counts what reaches it. Duplicates (concurrent and later) must reach the app
// once and get the original's bytes. Waits are for events: the app seeing a request, the
// sidecar's own gauge of waiting duplicates; never for time to pass.
import { describe, expect, it } from 'vitest';
import { send, type SendResult } from '../support/http-client.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';
import { metricSum, parsePrometheus } from '../support/metrics.ts';
import { startScriptedUpstream, type ScriptedUpstream, type Step } from '../support/scripted-upstream.ts';
import { startTestSidecar, type TestSidecar } from '../support/sidecar.ts';

const track = closeAfterEach();

function gate(): { opened: Promise<void>; open(): void } {
  let open = (): void => {};
  const opened = new Promise<void>((r) => (open = r));
  return { opened, open };
}

async function sidecarFor(app: ScriptedUpstream, idempotency: Record<string, unknown> = {}): Promise<TestSidecar> {
  return track(await startTestSidecar({ inbound: { app: { address: '127.0.0.1', port: app.port }, idempotency } }));
}

/** A sample from the sidecar's own registry, in process (no scrape between checks). */
async function sample(sc: TestSidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricSum(parsePrometheus(await sc.sidecar.metrics.metrics()), name, labels);
}

function post(sc: TestSidecar, key: string | undefined, path = '/orders', body = '{"item":"tea"}'): Promise<SendResult> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key !== undefined) headers['idempotency-key'] = key;
  return send({ port: sc.inboundPort, method: 'POST', path, host: 'shop', headers, body });
}

describe('idempotency through the sidecar', () => {
  it('concurrent duplicates reach the app once and all get the original answer', async () => {
    const g = gate();
    let made = 0;
    const app = track(
      await startScriptedUpstream((): Step => ({ after: g.opened, then: { status: 201, headers: { 'x-order': `o-${++made}` }, body: `order o-${made} created` } })),
    );
    const sc = await sidecarFor(app);

    const original = post(sc, 'key-concurrent');
    await app.waitForHead(1);
    const duplicates = [post(sc, 'key-concurrent'), post(sc, 'key-concurrent')];
    await eventually('two duplicates waiting', async () => (await sample(sc, 'sluice_idempotency_waiting')) === 2);
    g.open();

    const [first, ...dups] = await Promise.all([original, ...duplicates]);
    expect(app.count).toBe(1);
    expect(first!.status).toBe(201);
    expect(first!.text).toBe('order o-1 created');
    expect(first!.headers['sluice-idempotent-replay']).toBeUndefined();
    for (const d of dups) {
      expect(d.status).toBe(201);
      expect(d.text).toBe(first!.text);
      expect(d.headers['x-order']).toBe('o-1');
      expect(d.headers['sluice-idempotent-replay']).toBe('true');
    }

    // Later, within the TTL: replayed, still without reaching the app.
    const later = await post(sc, 'key-concurrent');
    expect([later.status, later.text, later.headers['sluice-idempotent-replay']]).toEqual([201, 'order o-1 created', 'true']);
    expect(app.count).toBe(1);

    const m = parsePrometheus((await sc.admin('/metrics')).text);
    expect(metricSum(m, 'sluice_idempotency_requests_total', { outcome: 'first' })).toBe(1);
    expect(metricSum(m, 'sluice_idempotency_requests_total', { outcome: 'waited' })).toBe(2);
    expect(metricSum(m, 'sluice_idempotency_requests_total', { outcome: 'replayed' })).toBe(1);
    expect(metricSum(m, 'sluice_idempotency_entries')).toBe(1);
    expect(metricSum(m, 'sluice_idempotency_waiting')).toBe(0);
  });

  it('a streamed body is teed: the original streams, a concurrent duplicate gets identical bytes', async () => {
    const g = gate();
    const app = track(await startScriptedUpstream([{ after: g.opened, then: { stream: { totalBytes: 300_000, chunkBytes: 16 * 1024, chunked: true } } }]));
    const sc = await sidecarFor(app);
    const original = send({ port: sc.inboundPort, method: 'PUT', path: '/blobs/1', host: 'shop', headers: { 'idempotency-key': 'blob-1' }, tallyOnly: true });
    await app.waitForHead(1);
    const dup = send({ port: sc.inboundPort, method: 'PUT', path: '/blobs/1', host: 'shop', headers: { 'idempotency-key': 'blob-1' }, tallyOnly: true });
    await eventually('the duplicate waiting', async () => (await sample(sc, 'sluice_idempotency_waiting')) === 1);
    g.open();
    const [a, b] = await Promise.all([original, dup]);
    expect([a.status, a.bodyBytes, a.bodyError]).toEqual([200, 300_000, undefined]);
    expect([b.status, b.bodyBytes, b.bodyDigest]).toEqual([200, 300_000, a.bodyDigest]);
    expect(b.headers['content-length']).toBe('300000');
    expect(app.count).toBe(1);
  });

  it('a sequential duplicate with its own body gets the stored answer; requests without a key all run', async () => {
    const app = track(await startScriptedUpstream({ queue: [], otherwise: { echo: true, status: 201 } }));
    const sc = await sidecarFor(app);
    const a = await post(sc, 'key-seq', '/orders', '{"n":1}');
    const b = await post(sc, 'key-seq', '/orders', '{"n":1}');
    expect(app.count).toBe(1);
    expect(b.status).toBe(201);
    expect(b.text).toBe(a.text);
    expect(b.headers['sluice-idempotent-replay']).toBe('true');

    await post(sc, undefined);
    await post(sc, undefined);
    expect(app.count).toBe(3);
  });

  it('the key on another path is refused with 422; a 5xx is not stored, so its retry runs', async () => {
    const app = track(await startScriptedUpstream({ queue: [{ status: 201, body: 'made' }, { status: 503, body: 'busy' }], otherwise: { status: 200, body: 'ok now' } }));
    const sc = await sidecarFor(app);
    expect((await post(sc, 'k-path', '/orders')).status).toBe(201);
    const wrong = await post(sc, 'k-path', '/refunds');
    expect([wrong.status, wrong.headers['sluice-error']]).toEqual([422, 'idempotency-mismatch']);

    expect((await post(sc, 'k-5xx')).status).toBe(503);
    const retry = await post(sc, 'k-5xx');
    expect([retry.status, retry.text, retry.headers['sluice-idempotent-replay']]).toEqual([200, 'ok now', undefined]);
    expect(app.count).toBe(3);
    expect(await sample(sc, 'sluice_idempotency_requests_total', { outcome: 'not_stored' })).toBe(1);
    expect(await sample(sc, 'sluice_idempotency_requests_total', { outcome: 'mismatch' })).toBe(1);
  });

  it('a body over maxResponseBytes is delivered to its client; duplicates get 409', async () => {
    const app = track(await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'x'.repeat(2048) } }));
    const sc = await sidecarFor(app, { maxResponseBytes: 1024 });
    const a = await post(sc, 'big');
    expect([a.status, a.bodyBytes]).toEqual([200, 2048]);
    const b = await post(sc, 'big');
    expect([b.status, b.headers['sluice-error']]).toEqual([409, 'idempotency-conflict']);
    expect(b.text).toContain('maxResponseBytes');
    expect(app.count).toBe(1);
  });

  it('trailers are stored and replayed with the body', async () => {
    const app = track(await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'payload', trailers: { 'x-checksum': 'c0ffee' } } }));
    const sc = await sidecarFor(app);
    const a = await post(sc, 'with-trailers');
    const b = await post(sc, 'with-trailers');
    expect([a.text, a.trailers['x-checksum']]).toEqual(['payload', 'c0ffee']);
    expect([b.text, b.trailers['x-checksum'], b.headers['sluice-idempotent-replay']]).toEqual(['payload', 'c0ffee', 'true']);
    expect(app.count).toBe(1);
  });
});
