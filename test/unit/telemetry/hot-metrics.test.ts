// The hot-path metrics must expose exactly what prom-client's own classes would for the same
// observations, so scrapers, dashboards and alerts cannot tell them apart.
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { hotCounter, hotHistogram } from '../../../src/telemetry/hot-metrics.ts';

const BUCKETS = [0.005, 0.01, 0.1, 1];
const OBSERVATIONS = [0, 0.005, 0.0051, 0.01, 0.5, 1, 1.5, 30, 0.003];

describe('hot metrics', () => {
  it('a histogram exposes the same text as prom-client', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const a = hotHistogram(ours, 'd_seconds', 'help text', ['upstream', 'code'], BUCKETS);
    const b = new Histogram({ name: 'd_seconds', help: 'help text', labelNames: ['upstream', 'code'], buckets: BUCKETS, registers: [theirs] });
    for (const [i, v] of OBSERVATIONS.entries()) {
      const labels = { upstream: i % 2 === 0 ? 'orders' : 'search', code: '200' };
      a.labels(labels).observe(v);
      b.labels(labels).observe(v);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('a counter exposes the same text as prom-client', async () => {
    const ours = new Registry();
    const theirs = new Registry();
    const a = hotCounter(ours, 'tries_total', 'help', ['upstream']);
    const b = new Counter({ name: 'tries_total', help: 'help', labelNames: ['upstream'], registers: [theirs] });
    a.labels({ upstream: 'x' }).inc();
    a.labels({ upstream: 'x' }).inc(2);
    a.labels({ upstream: 'y' }).inc();
    b.labels({ upstream: 'x' }).inc();
    b.labels({ upstream: 'x' }).inc(2);
    b.labels({ upstream: 'y' }).inc();
    expect(await ours.metrics()).toBe(await theirs.metrics());
  });

  it('binds one child per label set and is get-or-create per registry', () => {
    const r = new Registry();
    const h = hotHistogram(r, 'x', 'h', ['a'], BUCKETS);
    expect(hotHistogram(r, 'x', 'h', ['a'], BUCKETS)).toBe(h);
    expect(h.labels({ a: '1' })).toBe(h.labels({ a: '1' }));
    expect(h.labels({ a: '1' })).not.toBe(h.labels({ a: '2' }));
  });
});
