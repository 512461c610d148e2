// Config propagation (a table of bench/run.ts, BENCH_ROWS=propagation): how long a commit takes
// to reach every sidecar of a fleet. A temporary git repository with one SidecarPolicy, `sluice
// control` (the built dist/) following it, and simulated sidecars (bench/propagation-sidecars.ts)
// connected to it, which parse and apply each push before they ACK. Each round commits a change,
// pokes the webhook (POST /v1/refresh) and measures, on the machine's one clock, when the service
// read the commit (its `commit applied` log line), when each sidecar applied it, when the service
// had every ACK (its `sidecar applied policy` lines) and when GET /v1/fleet showed all in sync.
// The report is in ./propagation-report.ts.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parsePolicy, formatPolicyError } from '../src/policy/parse.ts';
import { CLK_TCK, otherCpuMeter } from './lib/cpu.ts';
import { settle, statusKiB } from './lib/measure.ts';
import { NODE, Proc, ROOT, SLUICE_MAIN, httpGet, httpPost, isAborting, pinned, sleep, waitFor } from './lib/procs.ts';
import { sluiceMissing, toolMissing } from './lib/proxies.ts';
import { P } from './overhead-params.ts';

/** The service every simulated sidecar says it is; the policy selects it. */
export const SERVICE = 'checkout';
export const POLICY_FILE = 'checkout.yaml';
/** Fleet API polls while waiting for the fleet to show in sync (each serializes every sidecar). */
const FLEET_POLL_MS = 20;
/** Simulator polls while a round propagates (a few bytes each). */
const SIM_POLL_MS = 10;

export interface RoundResult {
  round: number;
  header: string;
  commit: string;
  /** From the webhook POST (t0) until the service logged the commit as read and valid. */
  fetchMs?: number;
  /** Per sidecar, t0 until it applied the commit, ascending. */
  applyMs: number[];
  /** The last sidecar's apply, from the fetch. */
  lastFromFetchMs?: number;
  /** t0 until the service had logged the last ACK, and how many it logged. */
  lastAckMs?: number;
  acks: number;
  /** t0 until GET /v1/fleet answered with every sidecar in sync (polled every FLEET_POLL_MS). */
  inSyncMs?: number;
  /** The first sidecar to receive the update, from the fetch: the service's own start-to-push. */
  firstReceivedFromFetchMs?: number;
  /** The slowest parse-and-apply inside a simulated sidecar (received to applied). */
  maxApplyWorkMs?: number;
  /** utime+stime of the service, its git children included, from t0 until in sync. */
  serviceCpuMs: number;
  sidecarsCpuMs: number;
  /** Busy CPU on the bench cores not used by our processes during the round, % of one core. */
  otherCpuPct: number;
  /** VmRSS of the service once the round is over. */
  rssAfterKiB?: number;
  notQuiet: boolean;
  error?: string;
}

export interface PropagationResult {
  sidecars: number;
  processes: number;
  rounds: RoundResult[];
  /** VmRSS of the service with every sidecar connected and in sync, before the first round. */
  rssBeforeKiB?: number;
  rssAfterKiB?: number;
  /** VmHWM at the end: its peak over its whole life (start-up and the first push included). */
  peakRssKiB?: number;
  /** Seconds from starting the simulators until the fleet showed all of them in sync on v1. */
  startupSeconds?: number;
  error?: string;
}

export function propagationSkip(): string | undefined {
  return sluiceMissing() ?? toolMissing('git');
}

// The wall clock, as the simulators and the service's log lines use: one clock for all processes.
// performance.timeOrigin + performance.now() is not: each process fixes its origin at start, and
// on this VM the monotonic clock drifts from the wall clock by ms per second, so processes
// started a minute apart disagree by tens of ms.
const now = (): number => Date.now();

function positiveInt(name: string, v: number, max: number): number {
  if (!Number.isInteger(v) || v > max) throw new Error(`${name} must be an integer from 1 to ${max}, got ${v}`);
  return v;
}

export function policyYaml(header: string): string {
  return [
    'apiVersion: sluice.dev/v1alpha1',
    'kind: SidecarPolicy',
    'metadata:',
    '  name: checkout',
    'spec:',
    '  selector:',
    `    service: ${SERVICE}`,
    `  deadlineHeader: ${header}`,
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// The policy repository: plain git, with this process's config only, so no signing hook or
// template of the user's can change what a commit is.

const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 'bench',
  GIT_AUTHOR_EMAIL: 'bench@example.com',
  GIT_COMMITTER_NAME: 'bench',
  GIT_COMMITTER_EMAIL: 'bench@example.com',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_TERMINAL_PROMPT: '0',
};

function git(dir: string, args: string[]): string {
  const r = spawnSync('git', args, { cwd: dir, env: GIT_ENV, encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.error?.message ?? r.stderr.trim()}`);
  return r.stdout.trim();
}

/** Writes the policy with `header`, checks it parses (as the service will), commits; the SHA. */
function commitPolicy(dir: string, header: string): string {
  const text = policyYaml(header);
  const parsed = parsePolicy(text, POLICY_FILE);
  if (!parsed.ok) throw new Error(`the bench's own policy is invalid: ${parsed.errors.map(formatPolicyError).join('; ')}`);
  writeFileSync(path.join(dir, POLICY_FILE), text);
  git(dir, ['add', POLICY_FILE]);
  git(dir, ['commit', '-q', '-m', `deadlineHeader ${header}`]);
  return git(dir, ['rev-parse', 'HEAD']);
}

// ---------------------------------------------------------------------------------------------
// What the service says: its log lines (pino JSON on stdout), its fleet API.

/** The service's `commit applied` and `sidecar applied policy` lines, by commit, ms since the epoch. */
class ServiceLog {
  readonly fetched = new Map<string, number>();
  readonly acks = new Map<string, Map<string, number>>();
  #rest = '';

  constructor(proc: Proc) {
    proc.child.stdout?.on('data', (c: Buffer) => this.#feed(c.toString('utf8')));
  }

  #feed(chunk: string): void {
    const lines = (this.#rest + chunk).split('\n');
    this.#rest = lines.pop() ?? '';
    // A line this long is not one of ours; drop it rather than grow without bound.
    if (this.#rest.length > 1024 * 1024) this.#rest = '';
    for (const line of lines) {
      if (!line.startsWith('{"level"')) continue;
      let rec: { msg?: string; time?: string; commit?: string; sidecar?: string };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        continue;
      }
      const at = typeof rec.time === 'string' ? Date.parse(rec.time) : Number.NaN;
      if (!Number.isFinite(at) || typeof rec.commit !== 'string') continue;
      if (rec.msg === 'commit applied' && !this.fetched.has(rec.commit)) this.fetched.set(rec.commit, at);
      if (rec.msg === 'sidecar applied policy' && typeof rec.sidecar === 'string') {
        let m = this.acks.get(rec.commit);
        if (m === undefined) this.acks.set(rec.commit, (m = new Map()));
        if (!m.has(rec.sidecar)) m.set(rec.sidecar, at);
      }
    }
  }
}

interface FleetJson {
  serving: { commit: string } | null;
  sidecars: { id: string; connected: boolean; inSync: boolean; desired: { commit: string } | null }[];
}

async function fleet(apiPort: number): Promise<FleetJson | undefined> {
  const r = await httpGet(`http://127.0.0.1:${apiPort}/v1/fleet`, 5000);
  if (r.status !== 200) return undefined;
  try {
    return JSON.parse(r.body) as FleetJson;
  } catch {
    return undefined;
  }
}

/** Connected sidecars whose desired policy is from `commit` and who run it. */
const syncedOn = (f: FleetJson | undefined, commit: string): number =>
  f === undefined ? 0 : f.sidecars.filter((s) => s.connected && s.inSync && s.desired?.commit === commit).length;

// ---------------------------------------------------------------------------------------------
// The simulators

interface SimStatus {
  connected: number;
  applied: Record<string, number>;
  nacks: number;
  lastNack: string | null;
}

interface SimApply {
  id: string;
  receivedAt: number;
  appliedAt: number;
  workMs: number;
}

async function simJson<T>(port: number, p: string): Promise<T | undefined> {
  const r = await httpGet(`http://127.0.0.1:${port}${p}`, 5000);
  if (r.status !== 200) return undefined;
  return JSON.parse(r.body) as T;
}

async function simTotals(ports: readonly number[], header: string): Promise<{ connected: number; applied: number; nacks: number; lastNack: string | null }> {
  const out = { connected: 0, applied: 0, nacks: 0, lastNack: null as string | null };
  for (const s of await Promise.all(ports.map((p) => simJson<SimStatus>(p, '/status')))) {
    if (s === undefined) continue;
    out.connected += s.connected;
    out.applied += s.applied[header] ?? 0;
    out.nacks += s.nacks;
    out.lastNack ??= s.lastNack;
  }
  return out;
}

/** utime+stime+cutime+cstime of one process (the children it waited for: git), ticks. */
function ticksWithChildren(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  } catch {
    return 0;
  }
}

const ticksMs = (ticks: number): number => (ticks * 1000) / CLK_TCK;

/** Polls `check` every `everyMs` until it returns true; throws `what` after `timeoutMs` or if one of `procs` exits. */
async function until(what: string, procs: Proc[], timeoutMs: number, everyMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    for (const p of procs) if (!p.alive) throw new Error(`${what}: ${p.name} exited\n${p.describe()}`);
    if (isAborting()) throw new Error('interrupted');
    if (await check()) return;
    if (now() > deadline) throw new Error(`${what}: not done after ${(timeoutMs / 1000).toFixed(1)} s`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// The scenario

export async function runPropagation(tmp: string): Promise<PropagationResult> {
  const n = positiveInt('BENCH_PROPAGATION_SIDECARS', P.propagationSidecars, 10_000);
  const rounds = positiveInt('BENCH_PROPAGATION_ROUNDS', P.propagationRounds, 1000);
  const nProcs = Math.min(n, positiveInt('BENCH_PROPAGATION_PROCESSES', P.propagationProcesses, 64));
  const timeoutMs = P.propagationTimeoutSeconds * 1000;
  const res: PropagationResult = { sidecars: n, processes: nProcs, rounds: [] };
  const procs: Proc[] = [];
  const say = (s: string): void => void process.stderr.write(`[bench] propagation: ${s}\n`);
  try {
    const repo = path.join(tmp, 'propagation-repo');
    const workDir = path.join(tmp, 'propagation-control');
    mkdirSync(repo, { recursive: true });
    git(repo, ['init', '-q', '-b', 'main']);
    let commit = commitPolicy(repo, 'x-v1');

    // The service, pinned like every server of the bench, on loopback only.
    const [cmd, args] = pinned(
      P.serverCpu,
      NODE,
      [SLUICE_MAIN, 'control', '--repo', repo, '--branch', 'main', '--grpc-address', '127.0.0.1', '--grpc-port', '0', '--api-address', '127.0.0.1', '--api-port', '0', '--poll-ms', '3600000', '--work-dir', workDir],
      P.nice,
    );
    const service = new Proc('sluice control', cmd, args);
    procs.push(service);
    const log = new ServiceLog(service);
    let ports: { grpcPort: number; apiPort: number } | undefined;
    await waitFor('sluice control', [service], async () => {
      const m = /^\{"grpcPort":(\d+),"apiPort":(\d+)\}$/m.exec(service.stdout);
      if (m) ports = { grpcPort: Number(m[1]), apiPort: Number(m[2]) };
      return ports !== undefined;
    }, timeoutMs);
    const { grpcPort, apiPort } = ports as { grpcPort: number; apiPort: number };

    // The sidecars, on the load core: what they cost is not the service's.
    say(`${n} simulated sidecars in ${nProcs} process(es)`);
    const t0Start = now();
    const simPorts: number[] = [];
    const sims: Proc[] = [];
    for (let k = 0; k < nProcs; k++) {
      const from = Math.floor((k * n) / nProcs);
      const to = Math.floor(((k + 1) * n) / nProcs);
      const [sc, sa] = pinned(
        P.loadCpu,
        NODE,
        [path.join(ROOT, 'bench', 'propagation-sidecars.ts'), '--target', `127.0.0.1:${grpcPort}`, '--count', String(to - from), '--first', String(from), '--service', SERVICE, '--heartbeat-ms', String(P.propagationHeartbeatMs)],
        P.nice,
      );
      const sim = new Proc(`sidecars-${k + 1}`, sc, sa);
      procs.push(sim);
      sims.push(sim);
    }
    for (const sim of sims) {
      await waitFor(sim.name, [sim, service], async () => /listening \d+/.test(sim.stdout), timeoutMs);
      simPorts.push(Number((/listening (\d+)/.exec(sim.stdout) as RegExpExecArray)[1]));
    }
    let last: FleetJson | undefined;
    await until('all sidecars connected and in sync on the first commit', procs, timeoutMs, 250, async () => {
      last = await fleet(apiPort);
      return syncedOn(last, commit) === n;
    }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; fleet shows ${syncedOn(last, commit)} of ${n} in sync, ${last?.sidecars.filter((s) => s.connected).length ?? 0} connected`);
    });
    res.startupSeconds = (now() - t0Start) / 1000;
    res.rssBeforeKiB = statusKiB(service.pid, 'VmRSS');
    say(`fleet in sync on the first commit after ${res.startupSeconds.toFixed(1)} s; ${rounds} rounds`);

    for (let round = 1; round <= rounds; round++) {
      const header = `x-v${round + 1}`;
      const quiet = await settle([P.loadCpu, P.serverCpu], P.quietWaitSeconds, 'propagation', `round ${round}`);
      commit = commitPolicy(repo, header);
      const r: RoundResult = { round, header, commit, applyMs: [], acks: 0, serviceCpuMs: 0, sidecarsCpuMs: 0, otherCpuPct: 0, notQuiet: !quiet };
      res.rounds.push(r);
      const svc0 = ticksWithChildren(service.pid);
      const sim0 = sims.reduce((s, p) => s + ticksWithChildren(p.pid), 0);
      const noise = otherCpuMeter([P.loadCpu, P.serverCpu], procs.map((p) => p.pid));
      const t0 = now();
      const deadline = t0 + timeoutMs;
      try {
        const poked = await httpPost(`http://127.0.0.1:${apiPort}/v1/refresh`, 5000);
        if (poked.status !== 202) throw new Error(`POST /v1/refresh answered ${poked.status} ${poked.body.trim()}`);
        let totals = await simTotals(simPorts, header);
        await until(`round ${round}: every sidecar applies ${header}`, procs, deadline - now(), SIM_POLL_MS, async () => {
          totals = await simTotals(simPorts, header);
          if (totals.nacks > 0) throw new Error(`a sidecar refused the update: ${totals.lastNack ?? ''}`);
          return totals.applied >= n;
        }).catch((err: unknown) => {
          throw new Error(`${(err as Error).message}; ${totals.applied} of ${n} applied, ${totals.connected} connected`);
        });
        let view: FleetJson | undefined;
        await until(`round ${round}: GET /v1/fleet shows every sidecar in sync`, procs, deadline - now(), FLEET_POLL_MS, async () => {
          view = await fleet(apiPort);
          return syncedOn(view, commit) === n;
        }).catch((err: unknown) => {
          throw new Error(`${(err as Error).message}; ${syncedOn(view, commit)} of ${n} in sync`);
        });
        r.inSyncMs = now() - t0;
        r.serviceCpuMs = ticksMs(ticksWithChildren(service.pid) - svc0);
        r.sidecarsCpuMs = ticksMs(sims.reduce((s, p) => s + ticksWithChildren(p.pid), 0) - sim0);
        r.otherCpuPct = noise(0);
        r.rssAfterKiB = statusKiB(service.pid, 'VmRSS');
        // The service logs an ACK as it records it, so its lines are written by now; give the pipe a moment.
        await until(`round ${round}: the service's log shows every ACK`, procs, Math.min(deadline - now(), 2000), SIM_POLL_MS, async () =>
          (log.acks.get(commit)?.size ?? 0) >= n && log.fetched.has(commit),
        ).catch(() => undefined);
        const fetchedAt = log.fetched.get(commit);
        if (fetchedAt !== undefined) r.fetchMs = fetchedAt - t0;
        const ackTimes = [...(log.acks.get(commit)?.values() ?? [])];
        r.acks = ackTimes.length;
        if (ackTimes.length > 0) r.lastAckMs = Math.max(...ackTimes) - t0;
        log.acks.delete(commit);

        const seen = new Map<string, SimApply>();
        for (const list of await Promise.all(simPorts.map((p) => simJson<SimApply[]>(p, `/applies?header=${header}`)))) {
          for (const a of list ?? []) if (!seen.has(a.id)) seen.set(a.id, a);
        }
        const applied = [...seen.values()];
        r.applyMs = applied.map((a) => a.appliedAt - t0).sort((a, b) => a - b);
        r.maxApplyWorkMs = Math.max(...applied.map((a) => a.workMs));
        if (fetchedAt !== undefined) {
          r.lastFromFetchMs = Math.max(...applied.map((a) => a.appliedAt)) - fetchedAt;
          r.firstReceivedFromFetchMs = Math.min(...applied.map((a) => a.receivedAt)) - fetchedAt;
        }
        say(`round ${round}: fetched ${r.fetchMs?.toFixed(0) ?? '?'} ms, last apply ${r.applyMs.at(-1)?.toFixed(0)} ms, in sync ${r.inSyncMs.toFixed(0)} ms after the webhook`);
      } catch (err) {
        r.error = err instanceof Error ? err.message : String(err);
        // A fleet that did not converge leaves the next round nothing clean to start from.
        break;
      }
    }
    res.peakRssKiB = statusKiB(service.pid, 'VmHWM');
    res.rssAfterKiB = statusKiB(service.pid, 'VmRSS');
  } catch (err) {
    res.error = err instanceof Error ? err.message : String(err);
  } finally {
    for (const p of [...procs].reverse()) await p.stop();
  }
  return res;
}
