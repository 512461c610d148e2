// Runs the real CLI (`node src/main.ts …`) as a child process, as a user would.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion (bounded), collecting its output; `stdin` is written to it, if given. */
export function runCli(args: readonly string[], timeoutMs = 15_000, stdin?: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd: ROOT, stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    if (stdin !== undefined) child.stdin?.end(stdin);
    child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sluice ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface RunningProxy {
  readonly child: ChildProcess;
  readonly outboundPort: number;
  readonly inboundPort: number;
  readonly adminPort: number;
  /** Everything the process wrote so far. */
  output(): string;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `sluice proxy` with the given args and waits for its "started" log line. */
/** `env` is added to this process's environment for the proxy. */
export function startCliProxy(args: readonly string[], timeoutMs = 15_000, env: Record<string, string> = {}): Promise<RunningProxy> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'proxy', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sluice proxy did not start in ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      out += chunk.toString();
      for (const line of out.split('\n')) {
        if (!line.includes('"sluice proxy started"')) continue;
        const started = JSON.parse(line) as Record<string, { port: number } | undefined>;
        clearTimeout(timer);
        resolve({
          child,
          outboundPort: started.outbound?.port ?? -1,
          inboundPort: started.inbound?.port ?? -1,
          adminPort: started.admin?.port ?? -1,
          output: () => out,
          stop: () => {
            child.kill('SIGTERM');
            return exited;
          },
        });
        return;
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`sluice proxy exited with ${code} before starting:\n${out}`));
    });
  });
}
