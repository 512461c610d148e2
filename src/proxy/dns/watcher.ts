// Keeps an upstream's configured endpoints resolved (build lifetime: one watcher per upstream
// per policy). IP addresses pass through; names are re-resolved as their answers expire (see
// ./name-state.ts for the rules, ./resolve.ts for how one name is resolved), and the caller
// hears of every change to the concrete {ip, port} set, which it uses to rebuild the upstream's
// endpoints and drain the pools of addresses that left.
//
// One timer for all names, armed for the earliest due one; one round of queries at a time, so a
// slow DNS server never has two refreshes of the same name in flight. No jitter on the schedule:
// a sidecar re-resolves a handful of names, and the TTLs that drive it already differ per name.
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { isIP } from 'node:net';
import type { DnsPolicy } from '../../policy/dns.ts';
import type { Endpoint } from '../../policy/types.ts';
import { systemClock, type Clock } from '../../stack/types.ts';
import { counter } from '../../telemetry/registry.ts';
import { sameEndpoints, sortEndpoints } from './addresses.ts';
import { initialNameState, nextNameState, type NameState, type Outcome } from './name-state.ts';
import { nodeDns, resolveName, type DnsFunctions, type NameAnswer } from './resolve.ts';

export interface DnsMetrics {
  /** outcome: resolved | partial | system | empty | failed (see NameAnswer). */
  readonly resolutions: Counter<'upstream' | 'outcome'>;
}

export function declareDnsMetrics(registry: Registry): DnsMetrics {
  return {
    resolutions: counter(
      registry,
      'sluice_dns_resolutions_total',
      'Endpoint name resolutions by outcome: resolved (DNS, with TTL), partial (one address family failed), system (/etc/hosts or search domains, no TTL), empty (no such name or no address), failed (last addresses kept).',
      ['upstream', 'outcome'],
    ),
  };
}

/** Timers, injected so the schedule is tested with a fake clock. */
export interface Timers {
  /** Calls `fn` once after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): () => void;
}

/** Unref'd: a pending refresh must not keep a process alive that is otherwise done. */
export const systemTimers: Timers = {
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};

export interface DnsWatcherOptions {
  /** Upstream name: the metrics label and the log field. */
  readonly upstream: string;
  /** As configured: `host` is an IP address (kept as is) or a name (resolved). */
  readonly endpoints: readonly Endpoint[];
  readonly policy: DnsPolicy;
  /** The resolved set changed (after `ready`): sorted, no repeats; may be empty. */
  readonly onChange: (endpoints: readonly Endpoint[]) => void;
  /** Default: node:dns with the system's servers (see nodeDns); closed with the watcher. */
  readonly dns?: DnsFunctions;
  readonly clock?: Clock;
  readonly timers?: Timers;
  /**
   * Picks which addresses stay when a name has more than policy.maxEndpoints. Give each sidecar
   * its own (the pod name) to spread sidecars over all addresses; default '' (all pick alike).
   */
  readonly subsetSeed?: string;
  readonly metrics?: DnsMetrics;
  readonly log?: Pick<Logger, 'info' | 'warn' | 'error'>;
}

const TIMER_SLACK_MS = 1;

export class DnsWatcher {
  /**
   * Settles once every name has been resolved or failed once, with the endpoints then known;
   * never rejects. A name whose first resolution failed contributes nothing until it succeeds.
   */
  readonly ready: Promise<readonly Endpoint[]>;
  readonly #o: DnsWatcherOptions;
  readonly #dns: DnsFunctions;
  readonly #ownsDns: boolean;
  readonly #clock: Clock;
  readonly #timers: Timers;
  readonly #literals: readonly Endpoint[];
  /** Each name once, with every port it is configured with. */
  readonly #ports = new Map<string, number[]>();
  readonly #names = new Map<string, NameState>();
  #endpoints: readonly Endpoint[];
  #isReady = false;
  #markReady: () => void = () => {};
  #cancelTimer: (() => void) | undefined;
  #closed = false;

  constructor(options: DnsWatcherOptions) {
    checkPolicy(options.policy);
    this.#o = options;
    this.#ownsDns = options.dns === undefined;
    this.#dns = options.dns ?? nodeDns();
    this.#clock = options.clock ?? systemClock;
    this.#timers = options.timers ?? systemTimers;
    const literals: Endpoint[] = [];
    for (const e of options.endpoints) {
      if (isIP(e.host)) {
        literals.push({ host: e.host, port: e.port });
        continue;
      }
      const name = e.host.toLowerCase().replace(/\.$/, '');
      const ports = this.#ports.get(name) ?? [];
      if (!ports.includes(e.port)) ports.push(e.port);
      this.#ports.set(name, ports);
    }
    this.#literals = literals;
    this.#endpoints = sortEndpoints(literals);
    const now = this.#clock.now();
    for (const name of this.#ports.keys()) this.#names.set(name, initialNameState(now));
    this.ready = new Promise<void>((resolve) => (this.#markReady = resolve)).then(() => this.#endpoints);
    if (this.#names.size === 0) this.#setReady();
    else this.#start();
  }

  /** The current resolved set: sorted, no repeats. */
  get endpoints(): readonly Endpoint[] {
    return this.#endpoints;
  }

  /** Stops the timer and ignores answers still in flight; `ready` settles if it had not. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    if (this.#ownsDns) this.#dns.cancel?.();
    this.#setReady();
  }

  #setReady(): void {
    this.#isReady = true;
    this.#markReady();
  }

  /** Resolves every name that is due, applies the answers, reports a change, re-arms the timer. */
  async #round(): Promise<void> {
    this.#cancelTimer = undefined;
    // Timers run on whole milliseconds and the clock does not: a timer may fire a fraction early.
    const startMs = this.#clock.now() + TIMER_SLACK_MS;
    const due = [...this.#names].filter(([, s]) => s.dueAtMs <= startMs).map(([name]) => name);
    const answers = await Promise.all(due.map((name) => resolveName(name, this.#o.policy.family, this.#dns)));
    if (this.#closed) return;
    // TTLs count from when the answer arrived, not from when the question left.
    const nowMs = this.#clock.now();
    due.forEach((name, i) => this.#apply(name, answers[i]!, nowMs));

    const next = sortEndpoints([
      ...this.#literals,
      ...[...this.#names].flatMap(([name, s]) => this.#ports.get(name)!.flatMap((port) => s.addresses.map((a) => ({ host: a.address, port })))),
    ]);
    const changed = !sameEndpoints(next, this.#endpoints);
    this.#endpoints = next;
    if (!this.#isReady) this.#setReady();
    else if (changed) this.#notify(next);
    this.#schedule();
  }

  #apply(name: string, answer: NameAnswer, nowMs: number): void {
    const { upstream, policy, subsetSeed = '', metrics, log } = this.#o;
    const prev = this.#names.get(name)!;
    const next = nextNameState(prev, answer, policy, nowMs, subsetSeed);
    this.#names.set(name, next);
    metrics?.resolutions.inc({ upstream, outcome: answer.kind satisfies Outcome });
    // Log transitions, not every retry: a DNS outage must not flood the log.
    if (answer.kind === 'failed' && prev.failures === 0) {
      log?.warn({ upstream, name, error: answer.error, kept: next.addresses.length }, 'dns resolution failed; keeping last addresses');
    } else if (answer.kind === 'partial' && prev.failures === 0) {
      log?.warn({ upstream, name, error: answer.error, family: answer.failedFamily }, 'dns resolution failed for one address family');
    } else if (answer.kind !== 'failed' && answer.kind !== 'partial' && prev.failures > 0) {
      log?.info({ upstream, name, failures: prev.failures }, 'dns resolution recovered');
    }
    if (answer.kind === 'empty' && prev.addresses.length > 0 && next.addresses.length === 0) {
      log?.warn({ upstream, name, removed: prev.addresses.length }, 'dns name has no address any more');
    }
  }

  #notify(endpoints: readonly Endpoint[]): void {
    try {
      this.#o.onChange(endpoints);
    } catch (err) {
      // The caller's bug must not stop the refreshes; its next change will be reported anyway.
      this.#o.log?.error({ upstream: this.#o.upstream, err }, 'dns onChange handler threw');
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    let dueAtMs = Infinity;
    for (const s of this.#names.values()) dueAtMs = Math.min(dueAtMs, s.dueAtMs);
    this.#cancelTimer = this.#timers.after(Math.max(0, dueAtMs - this.#clock.now()), () => this.#start());
  }

  #start(): void {
    if (this.#closed) return;
    this.#round().catch((err: unknown) => {
      // Only a bug gets here (resolveName never rejects). Keep watching, at the failure pace.
      this.#o.log?.error({ upstream: this.#o.upstream, err }, 'dns refresh round failed');
      if (!this.#isReady) this.#setReady();
      if (!this.#closed) this.#cancelTimer = this.#timers.after(this.#o.policy.failureRetryMs, () => this.#start());
    });
  }
}

/**
 * The parsed policy is already in range; this guards other callers (tests, the bench), because a
 * zero interval would be a query loop and a NaN one would never refresh at all.
 */
function checkPolicy(p: DnsPolicy): void {
  for (const key of ['minTtlMs', 'maxTtlMs', 'refreshMs', 'failureRetryMs', 'maxEndpoints'] as const) {
    const v = p[key];
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`dns ${key} must be an integer >= 1, got ${v}`);
  }
  if (p.maxTtlMs < p.minTtlMs) throw new RangeError(`dns maxTtlMs must be >= minTtlMs (${p.minTtlMs}), got ${p.maxTtlMs}`);
  if (!['any', 'ipv4', 'ipv6'].includes(p.family)) throw new RangeError(`dns family must be 'any', 'ipv4' or 'ipv6', got ${String(p.family)}`);
}
