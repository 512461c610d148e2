// The README's examples are run as written (ports rewritten to free ones), so the docs cannot
// drift from the code: a newcomer's first curl works or this test fails.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, startCliProxy, type RunningProxy } from '../support/cli.ts';

const exec = promisify(execFile);

/** The shell commands of one README section, one per line, without comments. */
function sectionCommands(heading: string): string[] {
  const readme = readFileSync(`${ROOT}/README.md`, 'utf8');
  const start = readme.indexOf(`## ${heading}`);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end === -1 ? undefined : end);
  const commands: string[] = [];
  for (const block of section.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const line of (block[1] as string).split('\n')) {
      const command = line.replace(/\s+#.*$/, '').trim();
      if (command !== '') commands.push(command);
    }
  }
  return commands;
}

describe('README: sending traffic through it', () => {
  let app: http.Server;
  let appPort: number;
  let proxy: RunningProxy;

  beforeAll(async () => {
    app = http.createServer((q, s) => s.end(`hello from ${q.headers.host}${q.url}\n`));
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    appPort = (app.address() as AddressInfo).port;
    // The embedded default policy, with every port moved to a free one.
    proxy = await startCliProxy(['--outbound-port', '0', '--inbound-port', '0', '--admin-port', '0', '--app-port', String(appPort)]);
  });

  afterAll(async () => {
    await proxy?.stop();
    await new Promise<void>((r) => app?.close(() => r()));
  });

  const commands = sectionCommands('Sending traffic through it');

  it('has the examples this test expects', () => {
    expect(commands.filter((c) => c.startsWith('curl') || c.startsWith('HTTP_PROXY')).length).toBeGreaterThanOrEqual(6);
  });

  for (const command of commands) {
    // Background starts (`… &`) are what beforeAll does for real.
    if (command.endsWith('&')) continue;
    it(command, async () => {
      const rewritten = command
        .replace(/127\.0\.0\.1:15001/g, `127.0.0.1:${proxy.outboundPort}`)
        .replace(/127\.0\.0\.1:15006/g, `127.0.0.1:${proxy.inboundPort}`)
        .replace(/127\.0\.0\.1:15000/g, `127.0.0.1:${proxy.adminPort}`)
        .replace(/127\.0\.0\.1:8080/g, `127.0.0.1:${appPort}`);
      const { stdout } = await exec('bash', ['-c', `${rewritten.replace(/^curl /, 'curl -sS --max-time 5 ').replace(/ curl /, ' curl -sS --max-time 5 ')}`]);
      if (command.includes('sluice-timeout-ms: 0')) {
        expect(stdout).toMatch(/^HTTP\/1\.1 504/);
        expect(stdout).toContain('sluice-error: deadline-exceeded');
      } else if (command.includes('/readyz')) {
        expect(stdout).toBe('ready\n');
      } else if (command.includes('/metrics')) {
        expect(stdout).toContain('http_client_request_duration_seconds_bucket');
      } else if (command.includes(':15006/')) {
        // Inbound keeps the Host the caller used: the pod's address, as apps behind a mesh see it.
        expect(stdout).toBe(`hello from 127.0.0.1:${proxy.inboundPort}/orders\n`);
      } else {
        expect(stdout).toBe(`hello from 127.0.0.1:${appPort}/orders\n`);
      }
    });
  }

  it('drains and exits 0 on SIGTERM', async () => {
    expect(await proxy.stop()).toBe(0);
    expect(proxy.output()).toContain('"drained"');
  });
});
