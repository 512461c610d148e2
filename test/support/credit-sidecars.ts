// Producer and consumer sidecars for the credit tests, in front of a scripted app whose
// requests can be held until the test releases them. The consumer's admission limit is static
// (4) so shares are exact; producers do not retry, so every refusal is visible.
import { expect } from 'vitest';
import { metricSum } from './metrics.ts';
import { send, type SendResult } from './http-client.ts';
import type { ScriptedUpstream, Step } from './scripted-upstream.ts';
import { startTestSidecar, upstream, type TestSidecar } from './sidecar.ts';

type Json = Record<string, unknown>;

/** Holds requests at the app until released (all of them, or only `holdPath`; the rest echo). */
export function gatedApp(holdPath?: string): { release(): void; script: (req: { url?: string }) => Step } {
  const gates: (() => void)[] = [];
  return {
    release() {
      for (const g of gates.splice(0)) g();
    },
    script: (req) => {
      if (holdPath !== undefined && req.url !== holdPath) return { echo: true };
      let open!: () => void;
      const after = new Promise<void>((r) => (open = r));
      gates.push(open);
      return { after, then: { status: 200, body: 'done' } };
    },
  };
}

/** A consumer sidecar with a static limit of 4; credits null = off. */
export function startConsumer(app: ScriptedUpstream, credits: Json | null = { leaseMs: 1000 }): Promise<TestSidecar> {
  return startTestSidecar({
    inbound: {
      app: { address: '127.0.0.1', port: app.port },
      admission: { adaptive: 'off', maxConcurrency: 4, queue: { maxWaiting: 0, maxWaitMs: 0 } },
      ...(credits === null ? {} : { credits }),
    },
  });
}

/** The spec of a producer whose upstream `app` is the consumer's inbound listener. */
export function producerSpec(consumer: TestSidecar, credits: Json = { maxWaitMs: 20 }): Json {
  return {
    outbound: {
      defaults: { retry: 'off' },
      upstreams: [upstream('app', `127.0.0.1:${consumer.inboundPort}`, { credits })],
    },
  };
}

export const getVia = (p: TestSidecar, path = '/work'): Promise<SendResult> =>
  send({ port: p.outboundPort, host: 'app', path, timeoutMs: 5000 });

/** A metric of upstream `app` on a producer (or summed on a consumer). */
export async function appMetric(p: TestSidecar, name: string): Promise<number> {
  return metricSum(await p.metrics(), name, { upstream: 'app' });
}

/** Polls until `ok` (bounded by the test's timeout): no sleeps of fixed length. */
export async function until(read: () => Promise<number>, ok: (v: number) => boolean, what: string): Promise<number> {
  let v = await read();
  while (!ok(v)) {
    await new Promise((r) => setTimeout(r, 10));
    v = await read();
  }
  expect(ok(v), what).toBe(true);
  return v;
}
