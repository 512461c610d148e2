// Shared plumbing for the benchmark drivers (bench/run.ts, bench/failover.ts): parameters from
// the environment, processes started and stopped by PID, CPU pinning, free ports, readiness
// polling, tool versions, and the main/signal wrapper that stops everything started here.
// The proxies under test (configs and launch) are in ./proxies.ts.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

// ---------------------------------------------------------------------------------------------
// Paths and parameters

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
const LOCAL_NODE = path.join(ROOT, 'node_modules', '.bin', 'node');
export const NODE = existsSync(LOCAL_NODE) ? LOCAL_NODE : process.execPath;
// The compiled build, as production runs it (the npm bench scripts build it first).
export const SLUICE_MAIN = path.join(ROOT, 'dist', 'main.js');

export function envNum(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${JSON.stringify(v)}`);
  return n;
}

/** A comma-separated env list, blanks dropped. */
export function envList(name: string, dflt = ''): string[] {
  return (process.env[name] ?? dflt)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** BENCH_NICE: the niceness every bench process runs at (negative needs root), or undefined. */
export function envNice(): number | undefined {
  const v = process.env['BENCH_NICE'];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < -20 || n > 19) throw new Error(`BENCH_NICE must be an integer from -20 to 19, got ${JSON.stringify(v)}`);
  return n;
}

/** Fails early when `nice` is set but not permitted here. */
export function checkNice(nice: number | undefined): void {
  if (nice === undefined) return;
  const r = spawnSync('nice', ['-n', String(nice), 'true'], { encoding: 'utf8' });
  if (r.status !== 0 || /cannot set niceness/i.test(r.stderr)) throw new Error(`BENCH_NICE=${nice}: not permitted here (${firstLine(r.stderr)})`);
}

/** Extra node flags for the sidecar processes, space-separated (e.g. --max-semi-space-size=16). */
// Default: the flags `npm start` and the image run sluice with.
export function sluiceNodeFlags(): string[] {
  return (process.env['BENCH_SLUICE_NODE_FLAGS'] ?? '--max-semi-space-size=8').split(/\s+/).filter((s) => s !== '');
}

// ---------------------------------------------------------------------------------------------
// Small utilities

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function onPath(cmd: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    if (dir === '') continue;
    const p = path.join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = addr !== null && typeof addr === 'object' ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** GET without an agent; status 0 on any error or timeout. */
export function httpGet(url: string, timeoutMs: number, host?: string): Promise<{ status: number; body: string }> {
  return httpCall(url, { method: 'GET', timeout: timeoutMs, agent: false, headers: host === undefined ? {} : { host } });
}

/** POST with an empty body, without an agent; status 0 on any error or timeout. */
export function httpPost(url: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return httpCall(url, { method: 'POST', timeout: timeoutMs, agent: false, headers: { 'content-length': '0' } });
}

function httpCall(url: string, options: http.RequestOptions): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.request(url, options, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: 0, body }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

export function firstLine(s: string): string {
  return s.split('\n').find((l) => l.trim() !== '')?.trim() ?? '';
}

export function fmt(n: number | undefined, digits = 2): string {
  if (n === undefined || !Number.isFinite(n)) return '—';
  return n.toFixed(digits);
}

// ---------------------------------------------------------------------------------------------
// /proc

export interface ProcStat {
  ppid: number;
  ticks: number; // utime + stime
}

export function readStat(pid: number): ProcStat | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised comm (which may contain spaces): state ppid ... utime(14) stime(15)
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) };
  } catch {
    return undefined;
  }
}

/** The given PIDs and all their live descendants (nginx workers, and so on). */
export function processTree(roots: readonly number[]): number[] {
  const children = new Map<number, number[]>();
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const st = readStat(Number(ent));
    if (st === undefined) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(Number(ent));
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const queue = [...roots];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    if (out.includes(pid)) continue;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Processes we start: tracked here and stopped by PID (SIGTERM, then SIGKILL after a bound).

const TAIL_BYTES = 64 * 1024;

const running = new Set<Proc>();
/** Set on SIGINT/SIGTERM: nothing new starts, rows stop, everything running is stopped. */
let aborting = false;

export function isAborting(): boolean {
  return aborting;
}

export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  stdout = '';
  stderr = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  exited: Promise<void>;

  /** `opts.env` is added to this process's environment. */
  constructor(name: string, cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
    if (aborting) throw new Error(`interrupted: not starting ${name}`);
    this.name = name;
    const env = opts.env === undefined ? process.env : { ...process.env, ...opts.env };
    this.child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'], env });
    if (this.child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
    this.pid = this.child.pid;
    const keep = (prev: string, chunk: Buffer): string => {
      const s = prev + chunk.toString('utf8');
      return s.length > TAIL_BYTES ? s.slice(s.length - TAIL_BYTES) : s;
    };
    this.child.stdout?.on('data', (c: Buffer) => {
      this.stdout = keep(this.stdout, c);
    });
    this.child.stderr?.on('data', (c: Buffer) => {
      this.stderr = keep(this.stderr, c);
    });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        resolve();
      });
      this.child.on('error', (err) => {
        this.stderr += `\nspawn error: ${err.message}`;
        this.exitCode ??= -1;
        resolve();
      });
    });
    running.add(this);
    void this.exited.then(() => running.delete(this));
  }

  get alive(): boolean {
    return this.exitCode === null && this.exitSignal === null;
  }

  /**
   * SIGTERM, wait up to graceMs, then SIGKILL; by PID only: this process and the descendants it
   * started (taken before signalling, so a wrapper's child is not orphaned and left running).
   */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.alive) return;
    const tree = processTree([this.pid]);
    const signal = (pids: number[], sig: NodeJS.Signals): void => {
      for (const pid of pids) {
        try {
          process.kill(pid, sig);
        } catch {
          // already gone
        }
      }
    };
    signal(tree, 'SIGTERM');
    const done = await Promise.race([this.exited.then(() => true), sleep(graceMs).then(() => false)]);
    const survivors = tree.filter((pid) => pid !== this.pid && readStat(pid) !== undefined);
    if (!done || survivors.length > 0) {
      signal(done ? survivors : tree, 'SIGKILL');
      await Promise.race([this.exited, sleep(2000)]);
    }
  }

  describe(): string {
    const status = this.alive ? 'running' : `exited code=${this.exitCode} signal=${this.exitSignal}`;
    return `${this.name} (pid ${this.pid}, ${status})\n--- stderr tail ---\n${this.stderr.slice(-4000)}\n--- stdout tail ---\n${this.stdout.slice(-2000)}`;
  }
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].reverse().map((p) => p.stop()));
}

/** Waits for `check` to pass, failing early if one of `procs` exits; throws with their output on timeout. */
export async function waitFor(what: string, procs: Proc[], check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const p of procs) {
      if (!p.alive) throw new Error(`${what}: ${p.name} exited before it was ready\n${p.describe()}`);
    }
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`${what}: not ready after ${timeoutMs} ms\n${procs.map((p) => p.describe()).join('\n')}`);
}

// ---------------------------------------------------------------------------------------------
// Pinning

/** `taskset -c CPU [nice -n N] cmd args...`: a command pinned to one core. */
export function pinned(cpu: string, cmd: string, args: string[], nice?: number): [string, string[]] {
  return ['taskset', ['-c', cpu, ...(nice === undefined ? [] : ['nice', '-n', String(nice)]), cmd, ...args]];
}

/** Pins this process (all its threads) to `cpu`: it coordinates and samples; keep it off the server core. */
export function pinSelf(cpu: string): void {
  spawnSync('taskset', ['-a', '-p', '-c', cpu, String(process.pid)], { stdio: 'ignore' });
}

/** Linux with taskset, and the given CPUs exist. */
export function checkPlatform(cpus: readonly string[]): void {
  if (os.platform() !== 'linux') throw new Error('the bench reads /proc and uses taskset: Linux only');
  if (onPath('taskset') === undefined) throw new Error('taskset is not on PATH (apt-get install util-linux)');
  const ncpu = os.cpus().length;
  for (const c of cpus) {
    if (!/^\d+$/.test(c) || Number(c) >= ncpu) throw new Error(`CPU ${c} does not exist on this ${ncpu}-CPU machine`);
  }
}

// ---------------------------------------------------------------------------------------------
// Report header pieces

export function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  return firstLine(`${r.stdout ?? ''}\n${r.stderr ?? ''}`) || 'unknown';
}

/** `<short rev>[ + uncommitted changes]`, or `no commit`. */
export function sluiceRevision(): string {
  const git = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  const dirty = spawnSync('git', ['-C', ROOT, 'status', '--porcelain'], { encoding: 'utf8' });
  const rev = git.status === 0 ? git.stdout.trim() : 'no commit';
  return `${rev}${git.status === 0 && dirty.stdout.trim() !== '' ? ' + uncommitted changes' : ''}`;
}

/** `nginx: X; haproxy: Y` with versions, or "not installed". */
export function proxyVersions(): string {
  const nginx = onPath('nginx') ? versionOf('nginx', ['-v']).replace(/^nginx version: /, '') : 'not installed';
  const haproxy = onPath('haproxy') ? versionOf('haproxy', ['-v']).replace(/ - https.*$/, '') : 'not installed';
  return `nginx: ${nginx}; haproxy: ${haproxy}`;
}

export function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
}

// ---------------------------------------------------------------------------------------------
// Scratch directory and the main wrapper: everything started here is stopped by PID at the end,
// also on error or Ctrl-C.

let tmpDir: string | undefined;
let keepTmp = false;

export function makeTmpDir(prefix: string, keep: boolean): string {
  tmpDir = mkdtempSync(path.join(os.tmpdir(), prefix));
  keepTmp = keep;
  return tmpDir;
}

export function removeTmpDir(): void {
  if (tmpDir !== undefined && !keepTmp) rmSync(tmpDir, { recursive: true, force: true });
}

/** What a bench's main returns: the report (built after everything is stopped) and whether a row failed. */
export interface BenchOutcome {
  report: () => string;
  failed: boolean;
}

/**
 * Runs `main`, stops everything it started and removes the scratch directory, prints its report
 * on stdout and exits 1 if a row failed. On SIGINT/SIGTERM or an error, stops everything first.
 */
export function runMain(name: string, main: () => Promise<BenchOutcome>): void {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (aborting) return;
      aborting = true;
      process.stderr.write(`[${name}] ${sig}: stopping everything started here\n`);
      void stopAll().finally(() => {
        removeTmpDir();
        process.exit(130);
      });
    });
  }
  const run = async (): Promise<number> => {
    let out: BenchOutcome;
    try {
      out = await main();
    } finally {
      await stopAll();
      removeTmpDir();
    }
    process.stdout.write(`${out.report()}\n`);
    return out.failed ? 1 : 0;
  };
  run().then(
    (code) => process.exit(code),
    async (err: unknown) => {
      process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
      await stopAll();
      process.exit(1);
    },
  );
}
