// The IETF rate-limit fields on a refusal, as draft-ietf-httpapi-ratelimit-headers-11 (May 2026)
// defines them: Structured Field lists whose items are the policy name as an sf-string.
//   RateLimit-Policy: "per-tenant";q=100;w=1    quota q (requests) per window w (seconds)   §3.1
//   RateLimit:        "per-tenant";r=0;t=2      r requests available, within t seconds      §4.1
// A token bucket refilling at `rate` per second is advertised as its rate in whole requests over
// whole seconds (q per w); its burst is not part of the draft's vocabulary and is left out.

/** The reply headers a refusal by one rule carries (lower-case names, as SluiceError wants them). */
export type RateLimitHeaders = {
  readonly 'ratelimit-policy': string;
  readonly ratelimit: string;
};

/** An sf-string (RFC 9651 §3.3.3): printable ASCII in quotes, with `"` and `\` escaped. */
export function sfString(s: string): string {
  if (!/^[\x20-\x7e]*$/.test(s)) throw new RangeError(`a structured-field string holds printable ASCII only, got ${JSON.stringify(s)}`);
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** RateLimit-Policy item: `"name";q=quota;w=windowS`. */
export function policyItem(name: string, quota: number, windowS: number): string {
  return `${sfString(name)};q=${wholeAtLeast(quota, 0)};w=${wholeAtLeast(windowS, 1)}`;
}

/** RateLimit item: `"name";r=available;t=seconds`; r is rounded down, t up (never promise more than there is). */
export function limitItem(name: string, available: number, resetS: number): string {
  return `${sfString(name)};r=${Math.max(0, Math.floor(available))};t=${Math.max(0, Math.ceil(resetS))}`;
}

/**
 * Whole seconds a refused client should wait for `waitMs` to pass: rounded up, at least 1 (a
 * Retry-After of 0 invites an immediate retry that would be refused again).
 */
export function waitSeconds(waitMs: number): number {
  if (!(waitMs > 0)) return 1;
  return Number.isFinite(waitMs) ? Math.max(1, Math.ceil(waitMs / 1000)) : 1;
}

export function refusalHeaders(
  rule: { readonly name: string; readonly quota: number; readonly windowS: number },
  available: number,
  waitS: number,
): RateLimitHeaders {
  return {
    'ratelimit-policy': policyItem(rule.name, rule.quota, rule.windowS),
    ratelimit: limitItem(rule.name, available, waitS),
  };
}

function wholeAtLeast(n: number, min: number): number {
  return Math.max(min, Math.round(n));
}
