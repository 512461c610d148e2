// The parsed policy: frozen, typed, units in names, `undefined` = off. Produced only by
// ./parse.ts from a SidecarPolicy document; everything downstream trusts these shapes.
import type { GrpcStatusName } from '../stack/grpc.ts';
import type { AccessLogPolicy } from '../telemetry/access-log.ts';
import type { DnsPolicy } from './dns.ts';
import type { RateLimitPolicy, RedisPolicy } from './ratelimits.ts';

export interface TimeoutPolicy {
  /** Opening a TCP connection to an endpoint. */
  readonly connectMs: number;
  /** Overall deadline for the whole exchange, across all tries, until the response body ends. */
  readonly requestMs: number | undefined;
  /** One try, from dispatch until response headers arrive. */
  readonly perTryMs: number | undefined;
  /** No body bytes in either direction for this long ends the exchange. */
  readonly idleMs: number | undefined;
}

/** What a failed try looked like, as the classifier names it. Statuses are listed separately. */
export type RetryCondition = 'connect-failure' | 'reset' | 'refused-stream' | 'per-try-timeout';

export interface BackoffPolicy {
  readonly baseMs: number;
  readonly capMs: number;
}

export interface RetryPolicy {
  /** Total tries including the first; 1 = no retries. */
  readonly maxAttempts: number;
  readonly retryOn: readonly RetryCondition[];
  readonly retryOnStatuses: readonly number[];
  /**
   * gRPC answers whose grpc-status is one of these are retried (as gRPC's own retry policy's
   * retryableStatusCodes), while no response message has reached the client.
   */
  readonly retryOnGrpcStatuses: readonly GrpcStatusName[];
  readonly backoff: BackoffPolicy;
  /** Honour a Retry-After from the upstream when it fits the deadline, up to this wait. */
  readonly retryAfterMaxMs: number;
  /** Request bodies up to this size are held for replay; larger ones are never retried. */
  readonly bufferLimitBytes: number;
  /** Retry non-idempotent methods even without an Idempotency-Key (route opt-in). */
  readonly retryNonIdempotent: boolean;
}

export interface RetryBudgetPolicy {
  /** Retries may add at most this share of requests over the window (0..1). */
  readonly ratio: number;
  readonly windowMs: number;
  /** Retries always allowed per second regardless of ratio, for low-traffic upstreams. */
  readonly minRetriesPerSecond: number;
  /** Retries in flight or waiting in back-off at once. */
  readonly maxConcurrentRetries: number;
}

export interface LoadBalancerPolicy {
  /** p2c-ewma: two random endpoints, the one with lower latency EWMA × (in-flight + 1) wins. */
  readonly algorithm: 'p2c-ewma' | 'round-robin';
  /** How fast the latency estimate forgets, ms. */
  readonly decayMs: number;
  /** Latency assumed for an endpoint before its first answer, ms. */
  readonly defaultRttMs: number;
}

export interface OutlierDetectionPolicy {
  /** enforce: eject; shadow: count what would be ejected, eject nothing; off. */
  readonly mode: 'enforce' | 'shadow' | 'off';
  /** Consecutive failed tries that eject an endpoint (0 = this check off). */
  readonly consecutiveFailures: number;
  readonly successRate:
    | { readonly windowMs: number; readonly minRequests: number; readonly minSuccessRate: number }
    | undefined;
  /**
   * Eject an endpoint whose latency is over `factor` × the median of its peers and at least
   * `minExcessMs` above it (the absolute margin keeps sub-millisecond jitter from ejecting).
   */
  readonly latency: { readonly factor: number; readonly minRequests: number; readonly minExcessMs: number } | undefined;
  /** The n-th ejection in a row lasts n × baseEjectionMs, at most maxEjectionMs. */
  readonly baseEjectionMs: number;
  readonly maxEjectionMs: number;
  /** At most this share of endpoints ejected at once; the last one never is. */
  readonly maxEjectionPercent: number;
  /**
   * While ejected, an endpoint gets one real GET/HEAD first try this often as a probe (on routes
   * that retry, so a failed probe is retried elsewhere); a probe that succeeds brings it back
   * at once. undefined: ejected endpoints wait out their ejection.
   */
  readonly probeIntervalMs: number | undefined;
}

/** enforce: refuse; shadow: count and annotate what would be refused, refuse nothing; off. */
export type ProtectionMode = 'enforce' | 'shadow' | 'off';

export interface CircuitBreakerPolicy {
  readonly mode: ProtectionMode;
  /** Rolling window the failure and slow-call shares are computed over, ms. */
  readonly windowMs: number;
  /** Tries in the window before either share can open the breaker. */
  readonly minRequests: number;
  /** Open when failed tries are more than this share of the window's tries (0..1). */
  readonly failureRatio: number;
  /** Open when at least `ratio` of the window's tries took `thresholdMs` or more to headers. */
  readonly slowCall: { readonly thresholdMs: number; readonly ratio: number } | undefined;
  /** First open period; each re-open from half-open doubles it, up to maxOpenMs. */
  readonly openMs: number;
  readonly maxOpenMs: number;
  /** Tries admitted in half-open; all must succeed to close, any failure re-opens. */
  readonly halfOpenProbes: number;
  /** Tries in flight to the upstream at once (all endpoints); beyond it, 503 at once. */
  readonly maxRequests: number | undefined;
  /** Tries waiting for a connection (in flight beyond the pools' connections); beyond it, 503. */
  readonly maxPending: number | undefined;
}

/** Requests name their priority in a header; anything else (or none) reads as 'default'. */
export type Priority = 'critical' | 'default' | 'sheddable';

/**
 * An adaptive concurrency limit on the app (inbound), Vegas-style as in Netflix's
 * concurrency-limits: the limit grows while latency stays near the no-load latency and shrinks
 * as a queue builds in the app. The no-load latency (min RTT) is re-measured every
 * `minRttProbeIntervalMs` by lowering the limit to `probeRatio` of itself for one sample window.
 */
export interface AdaptiveLimitPolicy {
  /** Limit before any sample, requests in flight. */
  readonly initialLimit: number;
  /** The limit never falls below this. */
  readonly minLimit: number;
  /** Latency samples are aggregated per window before the limit moves, ms. */
  readonly sampleWindowMs: number;
  /** A window with fewer samples does not move the limit. */
  readonly minSamples: number;
  /** How often the no-load latency is re-measured, ms (jittered by ±10%). */
  readonly minRttProbeIntervalMs: number;
  /** During a probe window the limit is this share of itself (0..1), at least minLimit. */
  readonly probeRatio: number;
}

/** Inbound admission: how many requests the app is given at once, and which wait or go first. */
export interface AdmissionPolicy {
  readonly mode: ProtectionMode;
  /** undefined: the limit is the static `maxConcurrency`. */
  readonly adaptive: AdaptiveLimitPolicy | undefined;
  /** Static maximum of requests in flight to the app; the adaptive limit never exceeds it. */
  readonly maxConcurrency: number;
  /** Requests that find the app at its limit wait here (critical first), bounded both ways. */
  readonly queue: { readonly maxWaiting: number; readonly maxWaitMs: number };
  /** Lower-case header naming the priority: critical, default or sheddable. */
  readonly priorityHeader: string;
  /** Sheddable requests are refused once in flight reaches this share of the limit (0..1). */
  readonly sheddableShare: number;
  /** Refuse at once a request whose remaining deadline is shorter than the app's expected latency. */
  readonly deadlineAware: boolean;
}

/** Consumer side of credit-based backpressure: shares the app's limit among producer sidecars. */
export interface CreditGrantPolicy {
  /** A grant is valid this long after it was last renewed (any request or answer renews it), ms. */
  readonly leaseMs: number;
  /** Relative share per producer service name (sluice-credit svc=...); others weigh 1. */
  readonly weights: Readonly<Record<string, number>>;
  /** Producers tracked at once; beyond it a new producer is served by plain admission. */
  readonly maxProducers: number;
}

/** Producer side of credit-based backpressure, per upstream. */
export interface CreditPolicy {
  /** Requests with no credit wait here at most maxWaiting at once, each at most maxWaitMs. */
  readonly maxWaiting: number;
  readonly maxWaitMs: number;
  /** An endpoint found not to grant credits (no sidecar) is sent to freely, asked again after this, ms. */
  readonly recheckMs: number;
}

/** Inbound dedupe of requests that carry an Idempotency-Key. */
export interface IdempotencyPolicy {
  /** A completed response is replayed to duplicates for this long, ms. */
  readonly ttlMs: number;
  /** Keys remembered at once (LRU beyond it). */
  readonly maxEntries: number;
  /** Bytes of stored responses at once, all keys (LRU beyond it). */
  readonly maxBytes: number;
  /** A response larger than this is not stored: later duplicates get 409 instead of a replay. */
  readonly maxResponseBytes: number;
  /** memory: this sidecar only; redis: shared by every replica through spec.redis. */
  readonly store: 'memory' | 'redis';
}

/** Hedged requests: a second try of an idempotent request while the first is still out. */
export interface HedgePolicy {
  /** Fixed delay before a hedge, ms; 'p95': the upstream's observed p95 latency. */
  readonly delayMs: number | 'p95';
  /** With delayMs: p95, hedges never go out sooner than this, ms. */
  readonly minDelayMs: number;
  /** Hedges per request beyond the first try. */
  readonly maxHedges: number;
}

export interface RoutePolicy {
  readonly name: string;
  readonly match: {
    readonly pathPrefix: string | undefined;
    /** Upper-case methods; undefined = any. */
    readonly methods: readonly string[] | undefined;
  };
  readonly timeouts: TimeoutPolicy;
  readonly retry: RetryPolicy | undefined;
  /**
   * The breaker this route's tries pass: the upstream's own (shared by every route that does
   * not set one), or one of the route's when `ownBreaker`.
   */
  readonly circuitBreaker: CircuitBreakerPolicy;
  readonly ownBreaker: boolean;
  /** undefined: no hedging (the default). Only idempotent requests are hedged. */
  readonly hedge: HedgePolicy | undefined;
}

export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/**
 * The HTTP version spoken to an upstream. auto: the version the client spoke (an HTTP/2 or gRPC
 * client's request goes out over HTTP/2, an HTTP/1.1 client's over HTTP/1.1); http1; http2:
 * cleartext HTTP/2 with prior knowledge (h2c), as gRPC servers speak it.
 */
export type UpstreamProtocol = 'auto' | 'http1' | 'http2';
export const UPSTREAM_PROTOCOLS: readonly UpstreamProtocol[] = Object.freeze(['auto', 'http1', 'http2']);

export interface UpstreamPolicy {
  readonly name: string;
  /** Authorities (host or host:port, lower-case) that select this upstream. */
  readonly hosts: readonly string[];
  /** As written: IP addresses, or names re-resolved per `dns`. */
  readonly endpoints: readonly Endpoint[];
  readonly dns: DnsPolicy;
  readonly protocol: UpstreamProtocol;
  /** Keep-alive connections per endpoint (HTTP/2: connections, each carrying many streams). */
  readonly maxConnectionsPerEndpoint: number;
  readonly timeouts: TimeoutPolicy;
  readonly retry: RetryPolicy | undefined;
  readonly retryBudget: RetryBudgetPolicy | undefined;
  readonly loadBalancer: LoadBalancerPolicy;
  readonly outlierDetection: OutlierDetectionPolicy;
  readonly circuitBreaker: CircuitBreakerPolicy;
  /** Every rule that applies to a request must admit it (per request, before retries). */
  readonly rateLimits: readonly RateLimitPolicy[];
  /** undefined: credits off for this upstream (the default). */
  readonly credits: CreditPolicy | undefined;
  /** The hedge routes inherit unless they set their own. */
  readonly hedge: HedgePolicy | undefined;
  /** Routes in match order; a final catch-all route named 'default' is always present. */
  readonly routes: readonly RoutePolicy[];
}

export interface ListenerAddress {
  readonly host: string;
  readonly port: number;
}

export interface InboundPolicy {
  readonly listener: ListenerAddress | undefined;
  readonly app: Endpoint;
  /** The HTTP version spoken to the app (inbound.app.protocol). */
  readonly appProtocol: UpstreamProtocol;
  readonly timeouts: TimeoutPolicy;
  /** Longest deadline a caller may ask for through the deadline header. */
  readonly maxDeadlineMs: number | undefined;
  /** Admission of inbound requests by rate (per tenant, per source...). */
  readonly rateLimits: readonly RateLimitPolicy[];
  /** undefined: off. */
  readonly admission: AdmissionPolicy | undefined;
  /** undefined: off. Needs admission (the limit it shares out). */
  readonly credits: CreditGrantPolicy | undefined;
  /** undefined: off. */
  readonly idempotency: IdempotencyPolicy | undefined;
}

export interface ServerLimits {
  /** Whole request head (request line and headers); larger gets 431. */
  readonly maxHeaderBytes: number;
  /** Time for a client to send the complete request head (slowloris). */
  readonly headersTimeoutMs: number;
  /** Idle keep-alive connections from clients are closed after this. */
  readonly keepAliveTimeoutMs: number;
  /** Request bodies held for replay by all requests together; beyond it, requests are not retried. */
  readonly maxRetryBufferBytes: number;
}

export interface OutboundPolicy {
  readonly listener: ListenerAddress | undefined;
  /** Hosts matching no upstream: forwarded with the defaults, or refused with 502 no-route. */
  readonly unknownHosts: 'forward' | 'reject';
  /** Policy for forwarded unknown hosts and the base every upstream overrides. */
  readonly defaults: Omit<UpstreamPolicy, 'name' | 'hosts' | 'endpoints'>;
  readonly upstreams: readonly UpstreamPolicy[];
}

/**
 * Which sidecars a policy applies to when the config service hands policies out: those whose
 * service is `service` (any when undefined) and whose labels include every `matchLabels` pair.
 * An empty selector applies to every sidecar. A sidecar running alone on its file ignores it.
 */
export interface PolicySelector {
  readonly service: string | undefined;
  readonly matchLabels: Readonly<Record<string, string>>;
}

export interface SidecarPolicy {
  readonly name: string;
  readonly selector: PolicySelector;
  readonly admin: ListenerAddress;
  readonly outbound: OutboundPolicy;
  readonly inbound: InboundPolicy;
  readonly limits: ServerLimits;
  readonly shutdown: { readonly graceMs: number };
  /** Header that carries the remaining deadline (ms) to the next hop. */
  readonly deadlineHeader: string;
  /** Where global rate limits are shared; undefined: no global limits. */
  readonly redis: RedisPolicy | undefined;
  /** The access log's sampling; undefined: no access log. */
  readonly accessLog: AccessLogPolicy | undefined;
}
