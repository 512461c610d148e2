// The config service and a sidecar as the processes users run: `sluice control` following a git
// repository, `sluice proxy --control` following it. The service is killed (SIGKILL) and
// restarted while the sidecar serves traffic; the sidecar restarted during an outage starts from
// the policy it persisted; `sluice status` prints the fleet.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { FleetView } from '../../src/control/fleet-view.ts';
import { ROOT, runCli, startCliProxy, type RunningProxy } from '../support/cli.ts';
import { policyRepo, until } from '../support/control.ts';
import { send } from '../support/http-client.ts';
import { deadPort } from '../support/raw-upstream.ts';
import { startScriptedUpstream } from '../support/scripted-upstream.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const TOKEN = 'test-token-1234';
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

interface RunningControl {
  readonly child: ChildProcess;
  readonly grpcPort: number;
  readonly apiPort: number;
  kill(): Promise<void>;
}

function startCliControl(args: readonly string[]): Promise<RunningControl> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, 'control', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const exited = new Promise<void>((r) => child.once('close', () => r()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sluice control did not start:\n${out}`));
    }, 15_000);
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /\{"grpcPort":(\d+),"apiPort":(\d+)\}/.exec(out);
      if (m === null) return;
      clearTimeout(timer);
      resolve({
        child,
        grpcPort: Number(m[1]),
        apiPort: Number(m[2]),
        kill: () => {
          child.kill('SIGKILL');
          return exited;
        },
      });
    });
    void exited.then(() => reject(new Error(`sluice control exited before starting:\n${out}`)));
  });
}

async function fleet(apiPort: number): Promise<FleetView> {
  const r = await send({ port: apiPort, path: '/v1/fleet', headers: { authorization: `Bearer ${TOKEN}` } });
  return JSON.parse(r.text) as FleetView;
}

const configOf = async (p: RunningProxy): Promise<{ deadlineHeader: string }> => JSON.parse((await send({ port: p.adminPort, path: '/config' })).text) as { deadlineHeader: string };

const POLICY = (header: string): string =>
  ['apiVersion: sluice.dev/v1alpha1', 'kind: SidecarPolicy', 'metadata:', '  name: orders', 'spec:', '  selector: {service: orders}', `  deadlineHeader: ${header}`, ''].join('\n');

describe('sluice control and sluice proxy --control, as processes', () => {
  it('survive a killed service, a restart during the outage, and report through sluice status', async () => {
    const app = await startScriptedUpstream(() => ({ status: 200, body: 'ok' }));
    cleanups.push(() => app.close());
    const repo = await policyRepo();
    cleanups.push(() => repo.close());
    await repo.commit({ 'orders.yaml': POLICY('x-v1') });
    const dir = await mkdtemp(join(tmpdir(), 'sluice-cli-control-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, `${TOKEN}\n`);
    const stateDir = join(dir, 'state');
    const controlArgs = (grpcPort: number) => ['--repo', repo.dir, '--grpc-address', '127.0.0.1', '--grpc-port', String(grpcPort), '--api-address', '127.0.0.1', '--api-port', '0', '--poll-ms', '60000', '--work-dir', join(dir, 'mirror'), '--token-file', tokenFile, '--log-level', 'warn'];

    let control = await startCliControl(controlArgs(0));
    cleanups.push(() => control.kill());
    const grpcPort = control.grpcPort;
    const proxyArgs = [
      '--control', `127.0.0.1:${grpcPort}`,
      '--control-token-file', tokenFile,
      '--state-dir', stateDir,
      '--wait-for-policy',
      '--service', 'orders',
      '--sidecar-id', 'orders-0',
      '--outbound-port', '0', '--inbound-port', '0', '--admin-port', '0',
      '--app-port', String(app.port),
    ];
    let proxy = await startCliProxy(proxyArgs);
    cleanups.push(() => proxy.stop());
    await until(async () => (await send({ port: proxy.adminPort, path: '/readyz' })).status === 200, 'ready after the first push', 10_000);
    expect((await configOf(proxy)).deadlineHeader).toBe('x-v1');

    // SIGKILL the service while traffic flows through the sidecar.
    let sent = 0;
    let failed = 0;
    let stop = false;
    const traffic = (async () => {
      while (!stop && sent < 3000) {
        sent++;
        const r = await send({ port: proxy.inboundPort, path: '/work' }).catch(() => undefined);
        if (r?.status !== 200) failed++;
      }
    })();
    await control.kill();
    await until(() => sent > 100, 'traffic during the outage', 10_000);
    control = await startCliControl(controlArgs(grpcPort));
    await repo.commit({ 'orders.yaml': POLICY('x-v2') });
    await send({ port: control.apiPort, method: 'POST', path: '/v1/refresh', headers: { authorization: `Bearer ${TOKEN}` } });
    await until(async () => (await configOf(proxy)).deadlineHeader === 'x-v2', 'v2 pushed after the restart', 15_000);
    stop = true;
    await traffic;
    expect(failed).toBe(0);

    const status = await runCli(['status', '--api', `http://127.0.0.1:${control.apiPort}`, '--token-file', tokenFile]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^SIDECAR\s+SERVICE\s+VERSION\s+COMMIT\s+SYNC\s+CONNECTED\s+HEALTH\s+LAST ERROR$/m);
    expect(status.stdout).toMatch(/^orders-0\s+orders\s+[0-9a-f]{16}\s+[0-9a-f]{12}\s+yes\s+yes\s+/m);
    const view = await fleet(control.apiPort);
    expect(view.sidecars[0]?.applied.commit).toBe(view.serving?.commit);

    // Restarted with the service up and the policy unchanged: the service's first answer confirms
    // the persisted version, which is what --wait-for-policy waits for.
    await proxy.stop();
    proxy = await startCliProxy(proxyArgs);
    await until(async () => (await send({ port: proxy.adminPort, path: '/readyz' })).status === 200, 'ready on the confirmed version', 10_000);

    // A sidecar restarted while the service is down starts from what it persisted.
    await control.kill();
    await proxy.stop();
    proxy = await startCliProxy(proxyArgs.filter((a) => a !== '--wait-for-policy'));
    expect((await configOf(proxy)).deadlineHeader).toBe('x-v2');
    expect((await send({ port: proxy.inboundPort, path: '/work' })).status).toBe(200);
  }, 60_000);

  it('refuses a --traces-forward that is not a URL undici could send to, before starting', async () => {
    const repo = await policyRepo();
    cleanups.push(() => repo.close());
    for (const url of ['http://collector:99999/v1/traces', 'ftp://collector/v1/traces', 'collector:4318']) {
      const r = await runCli(['control', '--repo', repo.dir, '--traces-forward', url]);
      expect(r.code, url).toBe(2);
      expect(r.stderr).toContain(`--traces-forward must be an http(s) URL of an OTLP/HTTP traces endpoint, got ${JSON.stringify(url)}`);
    }
  });

  it('sluice status says when the service cannot be reached', async () => {
    const port = await deadPort();
    const r = await runCli(['status', '--api', `http://127.0.0.1:${port}`]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^sluice status: cannot reach http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  });
});
