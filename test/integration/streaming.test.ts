// Bodies stream through the sidecar: 100 MiB each way with bounded memory, and a stalled reader
// on either side stops the writer on the other (backpressure) instead of filling the sidecar.
// The data is generated and checked on the fly (pattern bytes, sha256): no end holds a body.
//
// Memory: the sidecar runs in this process, together with the test client and the scripted
// upstream, so process.memoryUsage().rss covers all three; the bound is on the whole process,
// stricter than on the sidecar alone. vitest runs each file in its own worker process, so other
// files do not add to it. We force a GC at every sample: 100 MiB of 64 KiB chunks leaves tens of
// MiB of *garbage* between scavenges (measured: up to ~65 MiB with no sidecar in the path at all),
// and the property under test is what the sidecar *holds*, not when V8 gets round to collecting.
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { send } from '../support/http-client.ts';
import { closeAfterEach } from '../support/lifecycle.ts';
import { patternChunk, patternDigest, patternStream } from '../support/pattern.ts';
import { startScriptedUpstream, type Script, type ScriptedUpstreamOptions } from '../support/scripted-upstream.ts';
import { startTestSidecar, upstream } from '../support/sidecar.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const track = closeAfterEach();
const MiB = 1024 * 1024;
const SIZE = 100 * MiB;
const MAX_RSS_GROWTH = 50 * MiB;
/** Kernel socket buffers on loopback plus stream high-water marks, four sockets deep: generous. */
const MAX_IN_FLIGHT_WHEN_STALLED = 32 * MiB;

/** Samples RSS (after a forced GC) until stopped; reports the peak growth over the start. */
function sampleRss(): { stop(): number } {
  gc();
  const before = process.memoryUsage.rss();
  let peak = before;
  const timer = setInterval(() => {
    gc();
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage.rss()) - before;
    },
  };
}

/** Resolves once `read()` stops growing for `quietMs` (bounded by `timeoutMs`); returns the value. */
async function settled(read: () => number, quietMs = 300, timeoutMs = 10_000): Promise<number> {
  const until = performance.now() + timeoutMs;
  let last = read();
  let since = performance.now();
  while (performance.now() < until) {
    await new Promise((r) => setTimeout(r, 25));
    const v = read();
    if (v !== last) {
      last = v;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) return v;
  }
  return read();
}

async function setup(script: Script, options: ScriptedUpstreamOptions = {}) {
  const up = track(await startScriptedUpstream(script, { captureBytes: 0, ...options }));
  const sc = track(
    await startTestSidecar({
      outbound: {
        upstreams: [
          upstream('bulk', up.endpoint, {
            // Long enough for a slow box; these tests are about memory, not speed.
            timeouts: { requestMs: 120_000, perTryMs: 60_000, idleMs: 30_000 },
          }),
        ],
      },
    }),
  );
  return { up, sc };
}

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

describe('streaming 100 MiB with bounded memory', () => {
  it('uploads 100 MiB through the outbound sidecar with RSS growth under 50 MiB', async () => {
    const { up, sc } = await setup({ queue: [], otherwise: { status: 200, body: 'stored' } });
    // PUT is idempotent, so only the replay-buffer bound (64 KiB default) keeps it from being held.
    const put = (path: string, size: number) =>
      send({
        port: sc.outboundPort,
        host: 'bulk',
        method: 'PUT',
        path,
        headers: { 'content-length': String(size) },
        body: patternStream(size),
        timeoutMs: 120_000,
      });
    await put('/warm', 4 * MiB);

    const sampler = sampleRss();
    const r = await put('/upload', SIZE);
    const growth = sampler.stop();

    expect(r.status).toBe(200);
    const rec = up.requests[1]!;
    expect(rec.bodyLength).toBe(SIZE);
    expect(rec.bodyDigest).toBe(patternDigest(SIZE));
    expect(growth, `rss grew ${mib(growth)}`).toBeLessThan(MAX_RSS_GROWTH);
  }, 180_000);

  it('downloads 100 MiB through the outbound sidecar with RSS growth under 50 MiB', async () => {
    const { sc } = await setup((req) => ({ stream: { totalBytes: req.url === '/warm' ? 4 * MiB : SIZE } }));
    await send({ port: sc.outboundPort, host: 'bulk', path: '/warm', tallyOnly: true });

    const sampler = sampleRss();
    const r = await send({ port: sc.outboundPort, host: 'bulk', path: '/download', tallyOnly: true, timeoutMs: 120_000 });
    const growth = sampler.stop();

    expect(r.status).toBe(200);
    expect(r.bodyError).toBeUndefined();
    expect(r.bodyBytes).toBe(SIZE);
    expect(r.bodyDigest).toBe(patternDigest(SIZE));
    expect(growth, `rss grew ${mib(growth)}`).toBeLessThan(MAX_RSS_GROWTH);
  }, 180_000);
});

describe('backpressure', () => {
  it('an upstream that stops reading stops the client upload (the sidecar does not soak it up)', async () => {
    const { up, sc } = await setup([], { stallBody: () => true });
    let pulled = 0;
    let offset = 0;
    const body = new Readable({
      read() {
        if (offset >= SIZE) return void this.push(null);
        const n = Math.min(64 * 1024, SIZE - offset);
        this.push(patternChunk(offset, n));
        offset += n;
        pulled = offset;
      },
    });
    const ac = new AbortController();
    const pending = send({
      port: sc.outboundPort,
      host: 'bulk',
      method: 'POST',
      path: '/stuck',
      headers: { 'content-length': String(SIZE) },
      body,
      signal: ac.signal,
      timeoutMs: 30_000,
    }).catch(() => undefined);
    await up.waitForHead(1);
    const accepted = await settled(() => pulled);
    ac.abort();
    await pending;
    expect(accepted, `client pushed ${mib(accepted)} into a stalled path`).toBeLessThan(MAX_IN_FLIGHT_WHEN_STALLED);
    expect(accepted).toBeGreaterThan(0);
  }, 30_000);

  it('a client that stops reading stops the upstream download', async () => {
    const { up, sc } = await setup([{ stream: { totalBytes: SIZE } }]);
    const socket = connect({ port: sc.outboundPort, host: '127.0.0.1' });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      socket.pause(); // never read: the kernel buffers fill, then the sidecar must stop pulling
      socket.write('GET /big HTTP/1.1\r\nHost: bulk\r\n\r\n');
      const rec = await up.waitForHead(1);
      const sent = await settled(() => rec.sentBytes);
      expect(sent, `upstream wrote ${mib(sent)} to a client that reads nothing`).toBeLessThan(MAX_IN_FLIGHT_WHEN_STALLED);
      expect(sent).toBeGreaterThan(0);
    } finally {
      socket.destroy();
    }
  }, 30_000);
});
