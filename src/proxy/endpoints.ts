// The endpoints of one upstream (build lifetime): their pools, the load balancer that picks one
// per try, and the outlier detector that takes misbehaving ones out of rotation. Both learn from
// each try where it settles (see UpstreamExchange's observer), through the one classifier, so a
// 503, a reset and a per-try timeout count the same everywhere, and our own refusals or a client
// leaving never count against an endpoint.
import type { Logger } from 'pino';
import type { Counter, Gauge, Registry } from 'prom-client';
import type { Dispatcher } from 'undici';
import { createBalancer, type Balancer } from '../policies/balancer/balancer.ts';
import { OutlierDetector, type EjectionEvent } from '../policies/outlier/detector.ts';
import type { Endpoint, LoadBalancerPolicy, OutlierDetectionPolicy } from '../policy/types.ts';
import { classifyError, classifyResponse } from '../stack/classify.ts';
import type { Clock } from '../stack/types.ts';
import { counter, gauge } from '../telemetry/registry.ts';

export interface EndpointMetrics {
  readonly ejections: Counter<'upstream' | 'reason' | 'mode'>;
  readonly ejected: Gauge<'upstream'>;
}

export function declareEndpointMetrics(registry: Registry): EndpointMetrics {
  return {
    ejections: counter(
      registry,
      'sluice_outlier_ejections_total',
      'Endpoints ejected (mode="enforce") or that would have been (mode="shadow"), by reason: consecutive_failures, success_rate, latency, stalled (tries sent to it went unanswered longer than the latency check allows).',
      ['upstream', 'reason', 'mode'],
    ),
    ejected: gauge(registry, 'sluice_endpoints_ejected', 'Endpoints out of rotation now, per upstream.', ['upstream']),
  };
}

export interface EndpointSetBuild {
  readonly upstream: string;
  readonly endpoints: readonly Endpoint[];
  /** Per endpoint, the pool an HTTP/1.1 client's request goes out on... */
  readonly dispatchers: readonly Dispatcher[];
  /** ...and an HTTP/2 client's (the same pools unless the upstream's protocol is auto). */
  readonly h2Dispatchers: readonly Dispatcher[];
  readonly loadBalancer: LoadBalancerPolicy;
  readonly outlierDetection: OutlierDetectionPolicy;
  readonly clock: Clock;
  readonly random: () => number;
  readonly metrics: EndpointMetrics;
  readonly log: Logger;
  /**
   * The set this one replaces when only the endpoint list changed (a DNS answer): endpoints in
   * both keep their latency estimates, ejections and probation.
   */
  readonly previous?: EndpointSet;
}

export class EndpointSet {
  readonly #b: EndpointSetBuild;
  readonly #balancer: Balancer;
  readonly #detector: OutlierDetector;
  readonly #ejected: { inc(): void; dec(): void };
  /** Scratch copy of eligibility for a retry's pick, reused to allocate nothing per retry. */
  readonly #avoiding: boolean[];
  readonly #enforced: boolean;
  /**
   * Retired by a policy update or DNS change. Tries that started here still end here, and their
   * retries may still pick here, but the set no longer moves the ejected gauge: its share was
   * given back at retirement, and the set that replaced it keeps its own.
   */
  #retired = false;

  constructor(b: EndpointSetBuild) {
    this.#b = b;
    const lb = b.loadBalancer;
    this.#balancer = createBalancer(lb.algorithm, b.endpoints.length, lb, b.clock, b.random);
    this.#detector = new OutlierDetector(b.endpoints.length, b.outlierDetection, b.clock);
    this.#ejected = b.metrics.ejected.labels({ upstream: b.upstream });
    this.#avoiding = new Array<boolean>(b.endpoints.length).fill(true);
    this.#enforced = b.outlierDetection.mode === 'enforce';
    const previous = b.previous;
    if (previous !== undefined) {
      const at = new Map(previous.#b.endpoints.map((e, j) => [`${e.host}|${e.port}`, j]));
      const map = b.endpoints.map((e) => at.get(`${e.host}|${e.port}`) ?? -1);
      this.#balancer.adopt(previous.#balancer, map);
      this.#detector.adopt(previous.#detector, map);
      // The previous set gives its share of the gauge back when retired; this one takes its own.
      if (this.#enforced) for (let k = this.#detector.ejectedCount(); k > 0; k--) this.#ejected.inc();
    }
  }

  /**
   * The endpoint for the next try: balanced over those not ejected, avoiding `avoid` if it can.
   * `allowed` (credits: endpoints with a credit to spend) narrows the choice; when every allowed
   * endpoint is ejected, the allowed ones are picked from all the same: the credit is there.
   */
  pick(avoid: number, allowed?: readonly boolean[]): number {
    const stalled = this.#detector.checkStalls();
    if (stalled !== undefined) this.#report(stalled);
    let eligible = this.#detector.eligible();
    if (allowed !== undefined) eligible = this.#narrow(eligible, allowed);
    const returned = this.#detector.takeReturned();
    for (const i of returned) {
      // Shadow mode reports would-be returns too; only enforced ejections moved the gauge.
      if (this.#enforced && !this.#retired) this.#ejected.dec();
      this.#b.log.info({ upstream: this.#b.upstream, endpoint: this.#name(i) }, 'endpoint back in rotation');
    }
    if (avoid < 0 || eligible.length < 2) return this.#balancer.pick(eligible);
    let others = 0;
    for (let k = 0; k < eligible.length; k++) {
      this.#avoiding[k] = eligible[k] === true && k !== avoid;
      if (this.#avoiding[k]) others++;
    }
    return this.#balancer.pick(others > 0 ? this.#avoiding : eligible);
  }

  /** Scratch for the allowed ∩ eligible set. */
  readonly #narrowed: boolean[] = [];

  #narrow(eligible: readonly boolean[], allowed: readonly boolean[]): readonly boolean[] {
    let any = false;
    for (let k = 0; k < allowed.length; k++) {
      this.#narrowed[k] = eligible[k] === true && allowed[k] === true;
      any ||= this.#narrowed[k] as boolean;
    }
    return any ? this.#narrowed : allowed;
  }

  /**
   * An ejected endpoint due for a probe, or -1; see OutlierDetector.probe. The caller sends it
   * only a try that is retried elsewhere if it fails, and gives up on it after probeTimeoutMs.
   */
  probe(): number {
    return this.#detector.probe();
  }

  probeTimeoutMs(i: number): number | undefined {
    return this.#detector.probeTimeoutMs(i);
  }

  dispatcher(i: number, h2: boolean): Dispatcher {
    return (h2 ? this.#b.h2Dispatchers[i] : this.#b.dispatchers[i]) as Dispatcher;
  }

  start(i: number): void {
    this.#balancer.start(i);
    this.#detector.started(i);
  }

  /** One try on endpoint i settled: with a status at its headers, or with an error. */
  settled(
    i: number,
    startedMs: number,
    statusCode: number | undefined,
    error: unknown,
    probe = false,
    headers?: Readonly<Record<string, string | string[] | undefined>>,
  ): void {
    const latencyMs = this.#b.clock.now() - startedMs;
    const verdict = statusCode !== undefined ? classifyResponse(statusCode, headers) : classifyError(error);
    // Answers only teach the balancer latency, as in Linkerd. A failed try's time is no latency
    // (a per-try timeout would read as seconds, and the peak-sensitive estimate would then starve
    // the endpoint long after it recovered): it only frees its in-flight slot (NaN = no sample).
    // Failures are ejection's business, and retries avoid the endpoint that just failed them.
    this.#balancer.end(i, verdict.failure ? Number.NaN : latencyMs);
    this.#detector.ended(
      i,
      statusCode !== undefined ? 'answered' : verdict.kind === 'per-try-timeout' ? 'timeout' : 'other',
      startedMs,
      latencyMs,
    );
    if (probe && statusCode !== undefined && !verdict.failure) {
      this.#detector.probeSucceeded(i);
      this.#b.log.info({ upstream: this.#b.upstream, endpoint: this.#name(i) }, 'probe answered: endpoint back early');
    }
    // Not the endpoint's doing: the client left, the deadline ran out, or we refused locally.
    if (statusCode === undefined && !verdict.failure) return;
    const ejection = this.#detector.record(i, verdict.failure, latencyMs, startedMs);
    if (ejection !== undefined) this.#report(ejection);
  }

  #report(ejection: EjectionEvent): void {
    const i = ejection.endpoint;
    const mode = ejection.enforced ? 'enforce' : 'shadow';
    this.#b.metrics.ejections.labels({ upstream: this.#b.upstream, reason: ejection.reason, mode }).inc();
    if (ejection.enforced && !this.#retired) this.#ejected.inc();
    this.#b.log.warn(
      { upstream: this.#b.upstream, endpoint: this.#name(i), reason: ejection.reason, ejectedForMs: ejection.durationMs, mode },
      ejection.enforced ? 'endpoint ejected' : 'endpoint would be ejected (shadow mode)',
    );
  }

  /** Drops this set's share of the ejected gauge when a policy update replaces it. */
  retire(): void {
    if (this.#retired) return;
    this.#retired = true;
    if (!this.#enforced) return;
    // Ejected now, plus returned since the last pick (counted up, not yet down).
    const n = this.#detector.ejectedCount() + this.#detector.takeReturned().length;
    for (let k = 0; k < n; k++) this.#ejected.dec();
  }

  endpoint(i: number): Endpoint {
    return this.#b.endpoints[i] as Endpoint;
  }

  #name(i: number): string {
    const e = this.#b.endpoints[i] as Endpoint;
    return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
  }
}
