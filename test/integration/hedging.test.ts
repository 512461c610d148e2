// Hedging through a real sidecar: two endpoints, the first request that reaches either one
// hangs. The client must get the other endpoint's answer about one hedge delay later, not after
// the hang, the hung exchange must be closed at the upstream, and the sidecar's own counters
// must say so. The hang is endless and the per-try timer seconds away, so "well before" has
// orders of magnitude of margin: no timing luck.
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { metricNames, metricSum } from '../support/metrics.ts';
import { startScriptedUpstream, type RecordedRequest, type Step } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream, type SpecOverrides } from '../support/sidecar.ts';

const track = closeAfterEach();

/** Two endpoints sharing one script: arrival number `hangAt` (1-based, across both) hangs. */
async function pair(hangAt: number) {
  let arrivals = 0;
  let hung: { name: string; rec: RecordedRequest } | undefined;
  const script =
    (name: string) =>
    (rec: RecordedRequest): Step => {
      arrivals++;
      if (arrivals === hangAt) {
        hung = { name, rec };
        return 'hang';
      }
      return { status: 200, body: `from ${name}` };
    };
  const a = track(await startScriptedUpstream(script('a')));
  const b = track(await startScriptedUpstream(script('b')));
  return { a, b, hung: () => hung, total: () => a.count + b.count };
}

async function sidecarFor(endpoints: string[], extra: SpecOverrides) {
  return track(
    await startTestSidecar({
      outbound: { upstreams: [upstream('orders', endpoints, { timeouts: { perTryMs: 4000 }, ...extra })] },
    }),
  );
}

const hedges = async (sc: Awaited<ReturnType<typeof sidecarFor>>, outcome: string) => {
  const m = await sc.metrics();
  const v = metricSum(m, 'sluice_hedges_total', { upstream: 'orders', outcome });
  return { v, names: metricNames(m).join(' ') };
};

describe('hedging', () => {
  it('answers from the other endpoint one delay after a hung try, and closes the hung exchange', async () => {
    const up = await pair(1);
    const sc = await sidecarFor([up.a.endpoint, up.b.endpoint], { hedge: { delayMs: 50, maxHedges: 1 } });

    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/items/1' });
    const hung = up.hung();
    expect(hung).toBeDefined();
    expect(r.status).toBe(200);
    // The hedge went to the endpoint the hung try did not.
    expect(r.text).toBe(`from ${hung!.name === 'a' ? 'b' : 'a'}`);
    expect(up.a.count).toBe(1);
    expect(up.b.count).toBe(1);
    // One hedge delay plus a local round trip; the hang would have lasted until the 4 s per-try timer.
    expect(r.headMs).toBeLessThan(1500);
    // The loser was cancelled: its exchange closed under the upstream, unanswered.
    expect(await hung!.rec.ended).toBe('closed');

    const sent = await hedges(sc, 'sent');
    expect(sent.v, sent.names).toBe(1);
    expect((await hedges(sc, 'won')).v).toBe(1);
    expect((await hedges(sc, 'lost')).v).toBe(0);
  });

  it('sends no hedge when the retry budget refuses it', async () => {
    const up = await pair(1);
    const sc = await sidecarFor([up.a.endpoint, up.b.endpoint], {
      hedge: { delayMs: 50, maxHedges: 1 },
      retryBudget: { ratio: 0, minRetriesPerSecond: 0 },
      timeouts: { perTryMs: 300 },
    });

    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/items/1' });
    // The hung try runs into its per-try timer; the retry that would follow is refused too.
    expect(r.status).toBe(504);
    expect(up.total()).toBe(1);
    expect((await hedges(sc, 'budget_refused')).v).toBe(1);
    expect((await hedges(sc, 'sent')).v).toBe(0);
  });

  it('in p95 mode, hedges only once the upstream has a p95, and then at about that delay', async () => {
    // The tracker needs 20 answers; the 21st request hangs.
    const up = await pair(21);
    const sc = await sidecarFor([up.a.endpoint, up.b.endpoint], { hedge: { delayMs: 'p95', minDelayMs: 20, maxHedges: 1 } });

    for (let i = 0; i < 20; i++) {
      const r = await send({ port: sc.outboundPort, host: 'orders', path: `/items/${i}` });
      expect(r.status).toBe(200);
    }
    expect((await hedges(sc, 'sent')).v).toBe(0);
    const delay = metricSum(await sc.metrics(), 'sluice_hedge_delay_seconds', { upstream: 'orders' });
    // Local answers take a few ms: the floor applies.
    expect(delay).toBeGreaterThanOrEqual(0.02);
    expect(delay).toBeLessThan(1);

    const r = await send({ port: sc.outboundPort, host: 'orders', path: '/items/slow' });
    expect(r.status).toBe(200);
    expect(r.headMs).toBeLessThan(1500);
    expect(await up.hung()!.rec.ended).toBe('closed');
    expect((await hedges(sc, 'won')).v).toBe(1);
    expect(up.total()).toBe(22);
  });
});
