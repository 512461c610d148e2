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
