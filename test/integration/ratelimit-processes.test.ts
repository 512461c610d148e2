// Two `sluice proxy` processes, as two pods of one service, share one global limit through a real
// redis-server: together they admit no more than the limit plus the burst over the test window.
// Redis stopped mid-test: each falls back to its local share and counts it; Redis back: global
// again. Counts, not timings, decide: the bound is computed from the window actually measured.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCliProxy, type RunningProxy } from '../support/cli.ts';
import { send } from '../support/http-client.ts';
import { metricSum, parsePrometheus } from '../support/metrics.ts';
import { redisAvailable, startRedis, type RedisServer } from '../support/redis.ts';
import { startScriptedUpstream, type ScriptedUpstream } from '../support/scripted-upstream.ts';

const RATE = 50;
const BURST = 10;

let redis: RedisServer;
let app: ScriptedUpstream;
let sidecars: RunningProxy[] = [];

function policyFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-rl-'));
  const file = join(dir, 'policy.yaml');
  writeFileSync(
    file,
    `apiVersion: sluice.dev/v1alpha1
kind: SidecarPolicy
metadata: {name: rl-test}
spec:
  admin: {port: 0}
  inbound: {listener: off}
  outbound:
    listener: {port: 0}
    upstreams:
      - name: orders
        hosts: [orders]
        endpoints: ["${app.endpoint}"]
        rateLimits:
          - {name: shared, requestsPerSecond: ${RATE}, burst: ${BURST}, scope: global, onRedisDown: local-share}
  redis: {address: 127.0.0.1, port: ${redis.port}, keyPrefix: rltest, probeIntervalMs: 100, commandTimeoutMs: 1000, replicas: auto}
`,
  );
  return file;
}

async function metrics(p: RunningProxy) {
  const r = await send({ port: p.adminPort, path: '/metrics' });
  return parsePrometheus(r.text);
}

async function decisions(outcome: string): Promise<number> {
  let sum = 0;
  for (const p of sidecars) sum += metricSum(await metrics(p), 'sluice_ratelimit_decisions_total', { rule: 'shared', outcome });
  return sum;
}

async function activations(): Promise<number> {
  let sum = 0;
  for (const p of sidecars) sum += metricSum(await metrics(p), 'sluice_ratelimit_fallback_activations_total');
  return sum;
}

/** Waits until every sidecar reports Redis `up` (1) or down (0), and, when up, sees both replicas. */
async function redisState(up: boolean): Promise<void> {
  for (;;) {
    let ready = 0;
    for (const p of sidecars) {
      const m = await metrics(p);
      const isUp = metricSum(m, 'sluice_ratelimit_redis_up') === 1;
      if (isUp === up && (!up || metricSum(m, 'sluice_ratelimit_redis_replicas') === sidecars.length)) ready++;
    }
    if (ready === sidecars.length) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `n` requests per sidecar, `c` at a time on each; statuses counted. */
async function load(n: number, c: number): Promise<{ ok: number; limited: number; other: number }> {
  const out = { ok: 0, limited: 0, other: 0 };
  await Promise.all(
    sidecars.flatMap((p) =>
      Array.from({ length: c }, async () => {
        for (let i = 0; i < n / c; i++) {
          const r = await send({ port: p.outboundPort, host: 'orders', path: '/' });
          if (r.status === 200) out.ok++;
          else if (r.status === 429) out.limited++;
          else out.other++;
        }
      }),
    ),
  );
  return out;
}

describe.skipIf(!redisAvailable())('two sidecar processes share a global limit through Redis', () => {
  beforeAll(async () => {
    redis = await startRedis();
    app = await startScriptedUpstream({ queue: [], otherwise: { status: 200, body: 'ok' } });
    const file = policyFile();
    sidecars = await Promise.all([startCliProxy(['--policy', file]), startCliProxy(['--policy', file])]);
  });

  afterAll(async () => {
    await Promise.all(sidecars.map((p) => p.stop()));
    await app?.close();
    await redis?.stop();
  });

  it('admit together no more than rate × window + burst', async () => {
    await redisState(true);
    const startMs = performance.now();
    const r = await load(200, 4);
    const elapsedS = (performance.now() - startMs) / 1000;
    expect(r.other).toBe(0);
    expect(r.limited).toBeGreaterThan(0);
    // Tokens refill in steps; one step's worth of slack on top of the bound.
    expect(r.ok).toBeLessThanOrEqual(Math.ceil(RATE * elapsedS + BURST + RATE * 0.05));
    expect(app.count).toBe(r.ok);
    // Redis stayed reachable (a generous commandTimeoutMs: CI machines stall), so every admission was global.
    expect(await decisions('allowed')).toBe(r.ok);
  });

  it('fall back to their local share while Redis is down, and go global again when it is back', async () => {
    await redisState(true);
    const activationsBefore = await activations();
    await redis.stop();
    // The first request after the stop may still try Redis; the fallback is immediate after it.
    await load(20, 1);
    await redisState(false);
    expect((await activations()) - activationsBefore).toBe(2);
    const before = await decisions('fallback_allowed');
    const r = await load(100, 1);
    expect(r.other).toBe(0);
    // Each sidecar's share of the burst is BURST / 2 (two replicas were seen live), plus what it
    // refills at RATE / 2 while the load runs: far below what 200 requests would get unlimited.
    expect(r.limited).toBeGreaterThan(0);
    expect((await decisions('fallback_allowed')) - before).toBe(r.ok);

    await redis.restart();
    await redisState(true);
    const allowedBefore = await decisions('allowed');
    const after = await load(20, 1);
    expect(after.other).toBe(0);
    expect((await decisions('allowed')) - allowedBefore).toBe(after.ok);
  });
});
