// `sluice inject` as users run it (a process, files and stdin, exit codes), and the probes it
// writes run against a real `sluice proxy`, as the kubelet would run them: the startup probe
// passes before the app is up (else the app would never start), readiness waits for the app.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { CONTROL_ADDRESS, sidecarOptions, TOKEN_SECRET } from '../../src/inject/annotations.ts';
import { sidecarContainer } from '../../src/inject/sidecar.ts';
import { ROOT, runCli, startCliProxy } from '../support/cli.ts';
import { deadPort } from '../support/raw-upstream.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const runWithStdin = (args: string[], stdin: string) => runCli(args, 15_000, stdin);

const POD = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: web
      image: example/web:1
      ports: [{ containerPort: 8000 }]
`;

describe('sluice inject, the command', () => {
  it('prints its help, and is listed in sluice --help', async () => {
    const help = await runCli(['inject', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: sluice inject [options] [FILE...]');
    const top = await runCli(['--help']);
    expect(top.stdout).toMatch(/inject +add the sidecar/);
    expect(top.stdout).toMatch(/webhook +serve the same injection/);
  });

  it('reads stdin, writes stdout, reports on stderr; a second pass is the identity', async () => {
    const first = await runWithStdin(['inject'], POD);
    expect(first.code).toBe(0);
    expect(first.stderr).toBe('(stdin): Pod web: injected\n');
    expect(first.stdout).toContain('restartPolicy: Always');
    const second = await runWithStdin(['inject', '-'], first.stdout);
    expect(second.stdout).toBe(first.stdout);
    expect(second.stderr).toMatch(/Pod web: not injected: already injected \(sluice.dev\/injected: ghcr.io\/sluice-dev\/sluice:/);
    const quiet = await runWithStdin(['inject', '-q'], POD);
    expect(quiet.stderr).toBe('');
  });

  it('joins several files into one stream', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sluice-inject-'));
    await writeFile(join(dir, 'a.yaml'), POD);
    await writeFile(join(dir, 'b.yaml'), POD.replace(/web/g, 'api'));
    const r = await runCli(['inject', join(dir, 'a.yaml'), join(dir, 'b.yaml')]);
    expect(r.code).toBe(0);
    expect(r.stdout.split(/^---$/m)).toHaveLength(2);
    expect(r.stdout).toContain('name: api');
  });

  it('exits 1 and writes nothing for a YAML error or a missing file, 2 for bad flags', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sluice-inject-'));
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'kind: Pod\nmetadata: { name: x\n');
    const syntax = await runCli(['inject', bad]);
    expect(syntax.code).toBe(1);
    expect(syntax.stdout).toBe('');
    expect(syntax.stderr).toMatch(new RegExp(`^${bad}:\\d+:\\d+: `, 'm'));
    const missing = await runCli(['inject', join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('nope.yaml: ENOENT');
    expect((await runCli(['inject', '--frobnicate', bad])).code).toBe(2);
    const control = await runCli(['inject', '--control', 'nowhere', bad]);
    expect(control.code).toBe(2);
    expect(control.stderr).toContain('--control: must be HOST:PORT[,HOST:PORT...] or "off", got "nowhere"');
  });
});

const exec = (cmd: string, args: string[]): Promise<number> =>
  new Promise((resolve) => execFile(cmd, args, { timeout: 10_000 }, (err) => resolve(err === null ? 0 : typeof err.code === 'number' ? err.code : -1)));

/** Runs a probe's exec command as the kubelet would, with this node for `node`. */
function runProbe(command: unknown): Promise<number> {
  const [bin, ...args] = command as string[];
  expect(bin).toBe('node');
  return exec(process.execPath, args);
}

describe('the probes injection writes, against a real sidecar', () => {
  it('startup and liveness pass before the app is up; readiness waits for the app; the legacy hook returns', async () => {
    const appPort = await deadPort();
    const proxy = await startCliProxy(['--outbound-port', '0', '--inbound-port', '0', '--admin-port', '0', '--app-port', String(appPort)]);
    cleanups.push(() => proxy.stop());
    const settings = { image: 'i', control: CONTROL_ADDRESS, tokenSecret: TOKEN_SECRET, legacy: true };
    const options = sidecarOptions({ 'sluice.dev/admin-port': String(proxy.adminPort) }, settings, { first: appPort, byName: () => undefined }, 'web');
    const c = sidecarContainer(options) as Record<string, { exec: { command: unknown } } & { postStart: { exec: { command: unknown } } }>;

    expect(await runProbe(c.startupProbe?.exec.command)).toBe(0);
    expect(await runProbe(c.livenessProbe?.exec.command)).toBe(0);
    expect(await runProbe(c.readinessProbe?.exec.command)).toBe(1); // the app is not listening yet
    expect(await runProbe(c.lifecycle?.postStart.exec.command)).toBe(0);

    const app = http.createServer((_q, s) => s.end('ok'));
    await new Promise<void>((r) => app.listen(appPort, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => app.close(r)));
    const deadline = Date.now() + 5000; // the sidecar caches its app check for a second
    let ready = 1;
    while (ready !== 0 && Date.now() < deadline) ready = await runProbe(c.readinessProbe?.exec.command);
    expect(ready).toBe(0);

    expect(await proxy.stop()).toBe(0);
    expect(await runProbe(c.livenessProbe?.exec.command)).toBe(1);
  });

  it('sluice proxy --admin-address binds admin where injection asks', async () => {
    const proxy = await startCliProxy(['--outbound-port', '0', '--inbound-port', '0', '--admin-port', '0', '--admin-address', '0.0.0.0']);
    cleanups.push(() => proxy.stop());
    expect(proxy.output()).toMatch(/"address":"0\.0\.0\.0","port":\d+,"msg":"admin up"/);
    const bad = await runCli(['proxy', '--admin-address', 'localhost']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--admin-address: must be an IP address (127.0.0.1, 0.0.0.0, ::), got "localhost"');
  });
});

/** The shell commands of the README's "Injecting the sidecar" section. */
function readmeCommands(): string[] {
  const readme = readFileSync(`${ROOT}/README.md`, 'utf8');
  const start = readme.indexOf('## Injecting the sidecar');
  if (start === -1) return [];
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end === -1 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((b) =>
    (b[1] as string).split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter((l) => l !== ''),
  );
}

describe('README: Injecting the sidecar', () => {
  const commands = readmeCommands();
  it('runs its examples as written, on an app.yaml', async () => {
    expect(commands.filter((c) => c.startsWith('sluice inject')).length).toBeGreaterThanOrEqual(3);
    const dir = await mkdtemp(join(tmpdir(), 'sluice-readme-'));
    await writeFile(join(dir, 'app.yaml'), POD);
    for (const command of commands) {
      if (!command.startsWith('sluice inject')) continue;
      const line = command.replace(/(^|\| )sluice /g, `$1${JSON.stringify(process.execPath)} ${JSON.stringify(MAIN)} `);
      const code = await new Promise<number>((resolve) => execFile('bash', ['-c', line], { cwd: dir, timeout: 15_000 }, (err) => resolve(err === null ? 0 : 1)));
      expect(code, command).toBe(0);
    }
  });
});
