// A real redis-server for tests: on a free loopback port, no persistence, started and stopped by
// this process only (by its pid). It can be stopped mid-test and restarted on the same port (an
// outage and a recovery that sidecars must ride out), or paused with SIGSTOP (a Redis that hangs:
// connections stay open, nothing answers).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { onFreePort } from './raw-upstream.ts';

/**
 * Whether redis-server is installed; tests that need it skip (and say so) when it is not. In CI
 * (.ci/run installs it) a missing server is an error: a suite that quietly skipped them is no pass.
 */
export function redisAvailable(): boolean {
  const installed = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!installed && process.env['CI'] === 'true') throw new Error('redis-server is not installed; .ci/run installs it with apt-get');
  return installed;
}

export interface RedisServer {
  readonly port: number;
  /** pid of the running server (changes on restart). */
  readonly pid: number;
  /** SIGTERM (SIGKILL if it has not exited within 5 s) and wait for the exit. */
  stop(): Promise<void>;
  /** Start again on the same port, empty. */
  restart(): Promise<void>;
  /** SIGSTOP: connections stay open, nothing answers. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Runs one command on a short-lived connection of its own (INFO, CONFIG RESETSTAT, FLUSHALL...). */
  command(name: string, ...args: (string | number)[]): Promise<unknown>;
  /** Lua scripts run since the last CONFIG RESETSTAT (EVAL + EVALSHA calls). */
  scriptCalls(): Promise<number>;
}

const live = new Set<ChildProcess>();
// A test run that dies must not leave servers behind.
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export async function startRedis(): Promise<RedisServer> {
  return onFreePort(async (port) => serverOn(port, await spawnRedis(port)), (err) => String(err).includes('Address already in use'));
}

async function serverOn(port: number, first: ChildProcess): Promise<RedisServer> {
  let child = first;
  let paused = false;
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (paused) child.kill('SIGCONT');
    paused = false;
    child.kill('SIGTERM');
    const force = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(force);
  };
  const command = async (name: string, ...args: (string | number)[]): Promise<unknown> => {
    const c = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    c.on('error', () => {});
    try {
      await c.connect();
      return await c.call(name, ...args);
    } finally {
      c.disconnect();
    }
  };
  return {
    port,
    get pid() {
      return child.pid!;
    },
    stop,
    async restart() {
      await stop();
      child = await spawnRedis(port);
    },
    pause() {
      paused = true;
      child.kill('SIGSTOP');
    },
    resume() {
      paused = false;
      child.kill('SIGCONT');
    },
    command,
    async scriptCalls() {
      const info = String(await command('INFO', 'commandstats'));
      let calls = 0;
      for (const m of info.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)) calls += Number(m[1]);
      return calls;
    },
  };
}

function spawnRedis(port: number): Promise<ChildProcess> {
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return new Promise((resolve, reject) => {
    let log = '';
    const onData = (d: Buffer): void => {
      log += d.toString();
      if (log.includes('Ready to accept connections')) {
        child.stdout!.off('data', onData);
        child.off('exit', onExit);
        // Keep draining the pipes so a chatty server never blocks on a full one.
        child.stdout!.resume();
        child.stderr!.resume();
        resolve(child);
      }
    };
    const onExit = (): void => reject(new Error(`redis-server on port ${port} exited before it was ready:\n${log}`));
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    child.once('exit', onExit);
  });
}
