// bottleneck's Redis clustering, used at the level that gives an immediate, atomic decision: its
// Lua scripts and key layout (node_modules/bottleneck/lib/Scripts.js, lua.json), not its job queue.
//
// What bottleneck 2.19.5 does, read from its source, and why sluice calls the scripts itself:
// - A global token bucket is bottleneck's reservoir: `reservoir` (start), reservoirIncreaseAmount
//   every reservoirIncreaseInterval ms, capped at reservoirIncreaseMaximum. process_tick.lua refills
//   lazily from the caller's clock on every script call (num_intervals × amount, capped), so there
//   is no timer to drift.
// - register.lua runs process_tick, then takes `weight` from the reservoir only if it is there
//   (conditions_check), all in one script: one round trip decides, atomically across sidecars.
// - Through Bottleneck.schedule() a job costs three scripts (submit.lua, register.lua, free.lua),
//   two of them before the job runs, and a job that passes submit's check but loses register to
//   another sidecar stays queued; since submit tests `queueLength == highWater` (not >=), one stuck
//   job turns highWater off and later jobs queue without bound. Locally, every decision passes two
//   serial locks (Sync.js) and ≥2 setTimeout(0) hops (LocalDatastore.yieldLoop): measured 3.5 ms per
//   decision and 1.9 s to decide 1000 concurrent requests. Neither can refuse at once.
// - With Redis 7, an error_reply without a code comes back as "ERR SETTINGS_KEY_NOT_FOUND", and
//   RedisDatastore.runScript compares messages exactly, so a limiter whose keys expired or whose
//   Redis restarted fails forever (bottleneck issues #205, #212; fix PR #215 unmerged). This module
//   matches the names anywhere in the message and re-initialises.
import { createRequire } from 'node:module';
import Bottleneck from 'bottleneck';

interface ScriptsModule {
  /** The 8 keys every script takes, for limiter `id`: b_<id>_settings, b_<id>_job_weights, ... */
  keys(name: string, id: string): string[];
  /** The Lua source of script `name`, headers (refs, process_tick, ...) included. */
  payload(name: string): string;
}

const require = createRequire(import.meta.url);
const scripts = require('bottleneck/lib/Scripts.js') as ScriptsModule;
const internals = Bottleneck as unknown as {
  readonly version: string;
  readonly prototype: { readonly storeDefaults: Readonly<Record<string, unknown>> };
};

/** The scripts sluice calls, under the names they are defined as on the ioredis client. */
export const SCRIPTS = {
  init: 'bottleneck_init',
  registerClient: 'bottleneck_register_client',
  register: 'bottleneck_register',
} as const;

const SOURCES: Readonly<Record<(typeof SCRIPTS)[keyof typeof SCRIPTS], string>> = {
  bottleneck_init: 'init',
  bottleneck_register_client: 'register_client',
  bottleneck_register: 'register',
};

export const KEY_COUNT = 8;

/** Lua source by the name to define it under. */
export function scriptSources(): ReadonlyArray<readonly [string, string]> {
  return Object.entries(SOURCES).map(([as, name]) => [as, scripts.payload(name)] as const);
}

export function scriptKeys(id: string): string[] {
  return scripts.keys('register', id);
}

/** Shortest refill step, ms: a step publishes a capacity message, so steps are kept coarse. */
export const MIN_STEP_MS = 50;

/**
 * The reservoir settings of a bucket refilling `ratePerSecond` up to `burst`: a whole number of
 * tokens per step, the step at least MIN_STEP_MS (fractional ms are fine in Lua).
 */
export function reservoirSettings(ratePerSecond: number): { amount: number; intervalMs: number } {
  const amount = Math.max(1, Math.ceil((ratePerSecond * MIN_STEP_MS) / 1000));
  return { amount, intervalMs: (amount * 1000) / ratePerSecond };
}

/**
 * ARGV after [now, clientId] for init.lua, as RedisDatastore.prepareInitSettings builds it:
 * clear flag, version, then every store setting (storeDefaults order, null as '') and the ids.
 * init.lua never overwrites settings that exist, so a changed rate must use a new id.
 */
export function initArgs(id: string, ratePerSecond: number, burst: number, keyTtlMs: number): string[] {
  const { amount, intervalMs } = reservoirSettings(ratePerSecond);
  const settings: Record<string, unknown> = {
    ...internals.prototype.storeDefaults,
    reservoir: burst,
    reservoirIncreaseInterval: intervalMs,
    reservoirIncreaseAmount: amount,
    reservoirIncreaseMaximum: burst,
    id,
    version: internals.version,
    // Keys expire this long after the last take (refresh_expiration.lua); clients unseen this long
    // are forgotten (process_tick.lua).
    groupTimeout: keyTtlMs,
    clientTimeout: keyTtlMs,
  };
  const args = ['0', internals.version];
  for (const [k, v] of Object.entries(settings)) args.push(k, v == null ? '' : String(v));
  return args;
}

/** Errors after which a limiter's keys must be initialised again (expired, or Redis restarted). */
export function needsInit(err: unknown): boolean {
  const message = err instanceof Error ? err.message : '';
  return message.includes('SETTINGS_KEY_NOT_FOUND') || message.includes('UNKNOWN_CLIENT');
}
