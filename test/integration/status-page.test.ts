// The fleet status page in a real browser (Debian's chromium, driven by playwright-core) against a
// real config service and sidecars: it shows every connected sidecar and a circuit breaker the test
// opened, asks for the bearer token when the service wants one, and renders failed traces as a
// waterfall. The browser must see no console error and no failed request beyond the expected ones.
// A screenshot of each theme goes to test-artifacts/ for a person to look at.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { chromium, type Browser, type Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../support/cli.ts';
import { fleet, linkedSidecar, policyDoc, policyRepo, startTestControl, until } from '../support/control.ts';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricSum, parsePrometheus } from '../support/metrics.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';
import { upstream } from '../support/sidecar.ts';
import { toolAvailable } from '../support/tools.ts';
import { exportSpans, memoryTracing } from '../support/tracing.ts';

const CHROMIUM = toolAvailable('chromium', ['--version'], 'apt-get install -y chromium (.ci/run installs it)');
const SKIPPED = CHROMIUM ? '' : ' (skipped: chromium is not installed)';
const ARTIFACTS = join(ROOT, 'test-artifacts');
const track = closeAfterEach();

async function browser(): Promise<Browser> {
  const b = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  track({ close: () => b.close() });
  return b;
}

/**
 * A page that records what went wrong in it: console errors, uncaught exceptions, failed
 * requests and HTTP errors, except responses `expected` allows (a 401 before the token is
 * entered) or a 404 from a service without a trace receiver, and Chromium's console line for them.
 */
async function watchedPage(b: Browser, expected: (status: number, url: string) => boolean = () => false) {
  const allowedHere = (status: number, url: string): boolean => (status === 404 && new URL(url).pathname === '/v1/traces') || expected(status, url);
  const context = await b.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const problems: string[] = [];
  const allowed = new Set<string>();
  page.on('response', (r) => {
    if (r.status() < 400) return;
    if (allowedHere(r.status(), r.url())) allowed.add(r.url());
    else problems.push(`HTTP ${r.status()} ${r.url()}`);
  });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (/^Failed to load resource: the server responded with a status of \d+/.test(m.text()) && allowed.has(m.location().url)) return;
    problems.push(`console: ${m.text()}`);
  });
  return { page, problems };
}

/** Waits until the sidecar's request sparkline has `n` points (a heartbeat each, seen by 2 s polls). */
const sparkPoints = (page: Page, id: string, n: number): Promise<void> =>
  until(
    async () => ((await page.locator(`[data-sidecar="${id}"] svg.spark.req polyline`).getAttribute('points', { timeout: 1000 }))?.split(' ').length ?? 0) >= n,
    `${n} points in the request chart of ${id}`,
    15_000,
  );

const BREAKER = { minRequests: 5, openMs: 60_000 };
// Retries and ejection off: five requests are five failures the breaker counts.
const QUIET = { retry: 'off', outlierDetection: { mode: 'off' } };

describe('the fleet status page', () => {
  it('serves its three files with their types, no-cache and a strict CSP; nothing else', async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'all.yaml': policyDoc('all') });
    const control = track(await startTestControl(repo));
    const get = (path: string, method = 'GET') => send({ port: control.apiPort, path, method });
    for (const [path, type] of [
      ['/', 'text/html'],
      ['/status', 'text/html'],
      ['/status/app.js', 'text/javascript'],
      ['/status/style.css', 'text/css'],
    ] as const) {
      const r = await get(path);
      expect(r.status, path).toBe(200);
      expect(r.headers['content-type']).toBe(`${type}; charset=utf-8`);
      expect(r.headers['cache-control']).toBe('no-cache');
      expect(r.headers['content-security-policy']).toMatch(/^default-src 'self'; script-src 'self'; style-src 'self';/);
      expect(r.headers['x-content-type-options']).toBe('nosniff');
      const again = await send({ port: control.apiPort, path, headers: { 'if-none-match': String(r.headers.etag) } });
      expect(again.status).toBe(304);
    }
    expect((await get('/', 'HEAD')).body.length).toBe(0);
    expect((await get('/', 'POST')).status).toBe(405);
    // A fixed map of names: no path reaches any other file.
    for (const path of ['/status/index.html', '/status/../package.json', '/status/%2e%2e/package.json', '/status/app.js/', '/status//app.js', '/status/APP.JS']) {
      expect((await get(path)).status, path).toBe(404);
    }
  });

  it(`shows every connected sidecar, and the breaker the test opened as open${SKIPPED}`, { skip: !CHROMIUM, timeout: 60_000 }, async () => {
    const down = track(await startScriptedUpstream(() => ({ status: 503, body: 'down' })));
    const fine = track(await startScriptedUpstream(() => ({ status: 200, body: 'ok' })));
    const repo = track(await policyRepo());
    await repo.commit({
      'all.yaml': policyDoc('all', {
        outbound: {
          upstreams: [upstream('payments', down.endpoint, { ...QUIET, circuitBreaker: BREAKER }), upstream('catalog', fine.endpoint, { ...QUIET, circuitBreaker: BREAKER })],
        },
      }),
    });
    const control = track(await startTestControl(repo));
    // checkout's spans go to the config service's receiver, as `sluice.dev/traces: control` does.
    const exporter = new InMemorySpanExporter();
    const traced = memoryTracing('checkout', exporter);
    track({ close: () => traced.provider.shutdown() });
    const checkout = track(await linkedSidecar({ id: 'checkout-7d9f-x2k', service: 'checkout', controlPort: control.grpcPort, tracing: traced.tracing }));
    const billing = track(await linkedSidecar({ id: 'billing-5c4b-q8n', service: 'billing', controlPort: control.grpcPort }));
    await until(async () => (await fleet(control.apiPort)).sidecars.filter((s) => s.inSync && s.applied.version !== '').length === 2, 'both sidecars run the policy');

    // Traffic for the charts while the page is open: paced, and stopped before the servers close.
    let stop = false;
    const traffic = (async () => {
      while (!stop) {
        await send({ port: billing.outboundPort, host: 'catalog', path: '/items' }).catch(() => undefined);
        await send({ port: checkout.outboundPort, host: 'catalog', path: '/items' }).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    track({ close: () => ((stop = true), traffic) });

    for (let i = 0; i < BREAKER.minRequests; i++) expect((await send({ port: checkout.outboundPort, host: 'payments', path: '/pay' })).text).toBe('down');
    await until(async () => metricSum(parsePrometheus((await send({ port: checkout.adminPort, path: '/metrics' })).text), 'sluice_circuit_breaker_state', { upstream: 'payments', state: 'open' }) === 1, 'the breaker open');
    await until(
      async () => (await fleet(control.apiPort)).sidecars.find((s) => s.id === 'checkout-7d9f-x2k')?.health?.breakers.some((b) => b.upstream === 'payments' && b.state === 'open') === true,
      'the open breaker in the fleet view',
    );
    const failed = exporter.getFinishedSpans().filter((sp) => sp.kind === SpanKind.SERVER && sp.status.code === SpanStatusCode.ERROR);
    expect(failed).toHaveLength(BREAKER.minRequests);
    await exportSpans(control.apiPort, exporter.getFinishedSpans());

    const b = await browser();
    const { page, problems } = await watchedPage(b);
    await page.goto(`http://127.0.0.1:${control.apiPort}/`);

    const view = await fleet(control.apiPort);
    const connected = view.sidecars.filter((s) => s.connected);
    expect(connected.map((s) => s.id).sort()).toEqual(['billing-5c4b-q8n', 'checkout-7d9f-x2k']);
    for (const s of connected) {
      const card = page.locator(`[data-sidecar="${s.id}"]`);
      await card.waitFor();
      expect(await card.textContent()).toContain(s.service);
      expect(await card.locator('.badge.ok', { hasText: 'connected' }).count()).toBe(1);
      expect(await card.locator('.badge.ok', { hasText: 'in sync' }).count()).toBe(1);
    }
    const opened = page.locator('[data-sidecar="checkout-7d9f-x2k"] [data-breaker="payments/"]');
    await opened.and(page.locator('[data-state="open"]')).waitFor();
    expect(await opened.textContent()).toMatch(/payments\s*open/);
    // Highlighted: open breakers are red, whatever the theme.
    const [r, g] = (await opened.evaluate((el) => el.ownerDocument.defaultView!.getComputedStyle(el).color)).match(/\d+/g)!.map(Number) as [number, number];
    expect(r).toBeGreaterThan(g + 80);
    await page.locator('[data-sidecar="billing-5c4b-q8n"] [data-breaker="payments/"][data-state="closed"]').waitFor();
    await page.locator('[data-sidecar="checkout-7d9f-x2k"] [data-breaker="catalog/"][data-state="closed"]').waitFor();
    expect(await page.locator('header').textContent()).toContain(view.serving!.commit.slice(0, 10));

    // The five failed payments, each a server span with its one try beneath it.
    const traces = page.getByTestId('failed-traces');
    for (const sp of failed) await traces.locator(`[data-trace="${sp.spanContext().traceId}"]`).waitFor();
    const first = failed[0]!;
    const tryOf = exporter.getFinishedSpans().find((sp) => sp.kind === SpanKind.CLIENT && sp.parentSpanContext?.spanId === first.spanContext().spanId)!;
    await traces.locator(`[data-trace="${first.spanContext().traceId}"]`).click();
    const rows = traces.locator('.span-row .span-name');
    await rows.nth(1).waitFor();
    expect(await rows.allTextContents()).toEqual([`${first.name} checkout · server`, `${tryOf.name} checkout · client`]);
    expect(await rows.evaluateAll((els) => els.map((e) => e.style.paddingLeft))).toEqual(['0px', '14px']);

    await sparkPoints(page, 'billing-5c4b-q8n', 3);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'status-page.png'), fullPage: true });
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-dark.png'), fullPage: true });
    expect(problems).toEqual([]);
  });

  it(`asks for the bearer token of a protected service, then shows the fleet${SKIPPED}`, { skip: !CHROMIUM, timeout: 30_000 }, async () => {
    const token = 'status-page-test-token';
    const repo = track(await policyRepo());
    await repo.commit({ 'all.yaml': policyDoc('all') });
    const control = track(await startTestControl(repo, { token }));
    track(await linkedSidecar({ id: 'guarded-1', service: 'orders', controlPort: control.grpcPort, token }));
    await until(async () => (await fleet(control.apiPort, token)).sidecars[0]?.connected === true, 'the sidecar connected');

    const b = await browser();
    let entered = false;
    // 401s are expected until the token is entered, never after.
    const { page, problems } = await watchedPage(b, (status, url) => status === 401 && !entered && new URL(url).pathname.startsWith('/v1/'));
    await page.goto(`http://127.0.0.1:${control.apiPort}/status`);
    await page.locator('#login').waitFor();
    expect(await page.locator('[data-sidecar]').count()).toBe(0);

    await page.locator('#token').fill('wrong');
    await page.locator('#login button').click();
    await page.locator('#login-error', { hasText: 'refused' }).waitFor();

    entered = true;
    await page.locator('#token').fill(token);
    await page.locator('#login button').click();
    await page.locator('[data-sidecar="guarded-1"]').waitFor();
    expect(await page.locator('#login').isHidden()).toBe(true);
    // Kept for the tab's session: a reload shows the fleet without asking again.
    await page.reload();
    await page.locator('[data-sidecar="guarded-1"]').waitFor();
    expect(await page.locator('#login').isHidden()).toBe(true);
    expect(problems).toEqual([]);
  });

  it(`lists failed traces and opens one as a waterfall; fleet and trace text stays text${SKIPPED}`, { skip: !CHROMIUM, timeout: 30_000 }, async () => {
    const repo = track(await policyRepo());
    await repo.commit({ 'all.yaml': policyDoc('all') });
    const control = track(await startTestControl(repo));
    track(await linkedSidecar({ id: 'tracer-1', service: 'orders', controlPort: control.grpcPort }));
    await until(async () => (await fleet(control.apiPort)).sidecars[0]?.connected === true, 'the sidecar connected');

    const b = await browser();
    const { page, problems } = await watchedPage(b);
    // Three services' spans, as their exporters would send them to the receiver; a root name that
    // is markup must show as text.
    const hostile = '<img src=x id=injected>';
    const exporter = new InMemorySpanExporter();
    const tracer = (service: string) => {
      const { tracing, provider } = memoryTracing(service, exporter);
      track({ close: () => provider.shutdown() });
      return tracing.tracer;
    };
    // Times given, so the waterfall's layout is known: web 0-180 ms, orders 10-170, payments 40-42.5.
    const t0 = Date.now() - 1000;
    const failing = (span: Span): Span => span.setStatus({ code: SpanStatusCode.ERROR, message: 'HTTP 503' });
    const root = failing(tracer('web').startSpan(hostile, { kind: SpanKind.SERVER, startTime: t0 }));
    const middle = failing(tracer('orders').startSpan('POST /orders', { kind: SpanKind.SERVER, startTime: t0 + 10 }, trace.setSpan(ROOT_CONTEXT, root)));
    failing(tracer('payments').startSpan('POST /pay', { kind: SpanKind.SERVER, startTime: t0 + 40 }, trace.setSpan(ROOT_CONTEXT, middle))).end(t0 + 42.5);
    middle.end(t0 + 170);
    root.end(t0 + 180);
    await exportSpans(control.apiPort, exporter.getFinishedSpans());
    const traceId = root.spanContext().traceId;
    await page.goto(`http://127.0.0.1:${control.apiPort}/`);
    const traces = page.getByTestId('failed-traces');
    const row = traces.locator(`[data-trace="${traceId}"]`);
    await row.waitFor();
    expect(await row.textContent()).toContain(hostile);
    expect(await row.textContent()).toContain('web → orders → payments');
    expect(await page.locator('#injected').count()).toBe(0);
    await row.click();
    const spans = traces.locator('.span-row');
    await spans.nth(2).waitFor();
    // Parents before children, each indented one step more.
    expect(await spans.locator('.span-name').allTextContents()).toEqual([`${hostile} web · server`, 'POST /orders orders · server', 'POST /pay payments · server']);
    const indents = await spans.locator('.span-name').evaluateAll((els) => els.map((e) => e.style.paddingLeft));
    expect(indents).toEqual(['0px', '14px', '28px']);
    // Each bar where its span ran, as a share of the whole trace (180 ms).
    const bars = await spans.locator('.bar').evaluateAll((els) => els.map((e) => [parseFloat(e.style.left).toFixed(1), parseFloat(e.style.width).toFixed(1)]));
    expect(bars).toEqual([
      ['0.0', '100.0'],
      ['5.6', '88.9'],
      ['22.2', '1.4'],
    ]);
    expect(await spans.locator('.dur').allTextContents()).toEqual(['180 ms', '160 ms', '2.5 ms']);
    // Closed again by a second click; the next poll does not reopen it.
    await row.click();
    await spans.first().waitFor({ state: 'detached' });
    expect(problems).toEqual([]);
  });
});
