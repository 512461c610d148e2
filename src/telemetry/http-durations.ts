// The two OpenTelemetry HTTP duration histograms, as a proxy has them. The sidecar is the server
// of every request it receives (`http_server_request_duration_seconds`, both directions, local
// replies included) and the client of every try it sends on (`http_client_request_duration_seconds`,
// first tries, retries and hedges). Callers' experience is the first; the upstream's health the
// second; their counts differ by exactly the retries, hedges and refusals.
import type { Registry } from 'prom-client';
import type { Direction } from '../stack/types.ts';
import { hotHistogram, type HistogramChild, type HotHistogram } from './hot-metrics.ts';

/** OpenTelemetry's recommended HTTP duration buckets, in seconds. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/** Methods kept as label values; anything else is `_OTHER` (OTel semconv), bounding cardinality. */
const METHODS = ['_OTHER', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
const METHOD_INDEX = new Map(METHODS.map((m, i) => [m, i]));

type DurationLabels = 'direction' | 'upstream' | 'route' | 'http_request_method' | 'http_response_status_code' | 'error_type';
const LABELS: readonly DurationLabels[] = ['direction', 'upstream', 'route', 'http_request_method', 'http_response_status_code', 'error_type'];

export type DurationFamily = HotHistogram<DurationLabels>;

export function serverDurations(registry: Registry): DurationFamily {
  return hotHistogram(
    registry,
    'http_server_request_duration_seconds',
    'Requests the sidecar received (direction outbound: from the app; inbound: for the app), from arrival until response headers were sent back; local replies included, with error_type.',
    LABELS,
    DURATION_BUCKETS,
  );
}

export function clientDurations(registry: Registry): DurationFamily {
  return hotHistogram(
    registry,
    'http_client_request_duration_seconds',
    'Tries the sidecar sent (to an upstream endpoint, or inbound to the app): first tries, retries and hedges, from sending until the answer headers or the failure (error_type).',
    LABELS,
    DURATION_BUCKETS,
  );
}

/**
 * One route's children of a duration family, bound once per (method, status, error) and reused:
 * binding hashes the labels, so the hot path must not. An answer is keyed by a number, so
 * recording it builds no string.
 */
export class RouteDurations {
  readonly #family: DurationFamily;
  readonly #direction: Direction;
  readonly #upstream: string;
  readonly #route: string;
  readonly #answered = new Map<number, HistogramChild>();
  readonly #failed = new Map<string, HistogramChild>();

  constructor(family: DurationFamily, direction: Direction, upstream: string, route: string) {
    this.#family = family;
    this.#direction = direction;
    this.#upstream = upstream;
    this.#route = route;
  }

  /** status 0: no answer (the label is empty); errorType '' for an answer from upstream. */
  observe(method: string, status: number, errorType: string, seconds: number): void {
    const index = METHOD_INDEX.get(method) ?? 0;
    const key = status * 16 + index;
    let child = errorType === '' ? this.#answered.get(key) : this.#failed.get(`${key} ${errorType}`);
    if (child === undefined) {
      child = this.#family.labels({
        direction: this.#direction,
        upstream: this.#upstream,
        route: this.#route,
        http_request_method: METHODS[index] as string,
        http_response_status_code: status === 0 ? '' : String(status),
        error_type: errorType,
      });
      if (errorType === '') this.#answered.set(key, child);
      else this.#failed.set(`${key} ${errorType}`, child);
    }
    child.observe(seconds);
  }
}
