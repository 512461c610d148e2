import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.ts';

describe('sluice CLI', () => {
  it('prints help and version', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('proxy');
    expect(help.stdout).toContain('validate');
    const proxyHelp = await runCli(['proxy', '--help']);
    expect(proxyHelp.code).toBe(0);
    expect(proxyHelp.stdout).toContain('--policy FILE');
    const version = await runCli(['--version']);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('rejects an unknown command with exit 2', async () => {
    const r = await runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command "frobnicate"');
  });

  it('validates the shipped policies', async () => {
    const r = await runCli(['validate', 'config']);
    expect(r.stdout).toContain('config/sluice.yaml: ok');
    expect(r.code).toBe(0);
  });

  it('validate prints file:line:col: field: reason and exits 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(
      file,
      'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata:\n  name: bad\nspec:\n  outbound:\n    defaults:\n      retry:\n        maxAttempts: 0\n',
    );
    const r = await runCli(['validate', file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^${file}:9:22: spec\\.outbound\\.defaults\\.retry\\.maxAttempts: .*1 to 10.*got 0`, 'm'));
  });

  it('refuses to start on an invalid policy, naming file and line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-'));
    const file = join(dir, 'typo.yaml');
    writeFileSync(file, 'apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata:\n  name: typo\nspec:\n  outbund: {}\n');
    const r = await runCli(['proxy', '--policy', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${file}:6:3: spec.outbund:`);
    expect(r.stderr).toContain('outbound');
  });
});

describe('sluice proxy: policy file reload', () => {
  it('applies a valid change, refuses an invalid one and keeps serving the last good policy', async () => {
    const { startCliProxy } = await import('../support/cli.ts');
    const dir = mkdtempSync(join(tmpdir(), 'sluice-reload-'));
    const file = join(dir, 'policy.yaml');
    const doc = (upstreams: string): string =>
      `apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata:\n  name: reload\nspec:\n  inbound:\n    listener: off\n  outbound:\n    upstreams: ${upstreams}\n`;
    writeFileSync(file, doc('[]'));
    const proxy = await startCliProxy(['--policy', file, '--outbound-port', '0', '--admin-port', '0']);
    const admin = (path: string): Promise<string> => fetch(`http://127.0.0.1:${proxy.adminPort}${path}`).then((r) => r.text());
    const waitFor = async (what: string, check: () => Promise<boolean>): Promise<void> => {
      for (let i = 0; i < 200; i++) {
        if (await check()) return;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`timed out waiting for ${what}:\n${proxy.output()}`);
    };
    try {
      writeFileSync(file, doc('[{name: orders, hosts: [orders], endpoints: ["127.0.0.1:9"]}]'));
      await waitFor('the new upstream', async () => (await admin('/config')).includes('"orders"'));

      writeFileSync(file, doc('[{name: orders, hosts: [orders], endpoints: ["127.0.0.1:9"], maxConnectionsPerEndpoint: 0}]'));
      await waitFor('the rejection', async () => /sluice_policy_reloads_total\{result="rejected"\} 1/.test(await admin('/metrics')));
      expect(proxy.output()).toContain('policy change rejected');
      expect(proxy.output()).toContain(`${file}:9:`);
      // The last good policy still serves.
      expect(await admin('/config')).toContain('"orders"');
      expect(await admin('/readyz')).toBe('ready\n');
    } finally {
      expect(await proxy.stop()).toBe(0);
    }
  });
});
