// `sluice validate` and the file loader under it: what CI in a policy repository sees.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runValidate } from '../../../src/cli/validate.ts';
import { DEFAULT_POLICY_PATH, MAX_POLICY_BYTES, loadPolicyFile } from '../../../src/policy/load.ts';
import { HEADER } from './helpers.ts';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-validate-'));
  await mkdir(join(dir, 'team', 'orders'), { recursive: true });
  await mkdir(join(dir, '.git'));
  await writeFile(join(dir, 'a.yaml'), HEADER);
  await writeFile(join(dir, 'team', 'orders', 'b.yml'), `${HEADER}  shutdown: {graceMs: -5}\n  limit: {}\n`);
  await writeFile(join(dir, 'team', 'README.md'), 'Not a policy.');
  await writeFile(join(dir, '.git', 'config.yaml'), 'not: [a policy');
  await mkdir(join(dir, 'empty'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function validate(...paths: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runValidate(paths, (l) => lines.push(l.replaceAll(dir, 'D')));
  return { code, lines };
}

describe('runValidate', () => {
  it('exits 0 and prints ok for valid files', async () => {
    expect(await validate(join(dir, 'a.yaml'), DEFAULT_POLICY_PATH)).toEqual({
      code: 0,
      lines: ['D/a.yaml: ok', `${DEFAULT_POLICY_PATH}: ok`],
    });
  });

  it('recurses into directories for *.yaml and *.yml, skipping hidden entries, and exits 1 on errors', async () => {
    expect(await validate(dir)).toEqual({
      code: 1,
      lines: [
        'D/a.yaml: ok',
        'D/team/orders/b.yml:6:23: spec.shutdown.graceMs: must be an integer from 0 to 3600000, got -5',
        'D/team/orders/b.yml:7:3: spec.limit: unknown field; did you mean limits?',
      ],
    });
  });

  it('exits 2 without paths', async () => {
    const { code, lines } = await validate();
    expect(code).toBe(2);
    expect(lines[0]).toMatch(/^usage: sluice validate PATH/);
  });

  it('exits 2 when a path does not exist, after checking the others', async () => {
    expect(await validate(join(dir, 'missing.yaml'), join(dir, 'a.yaml'))).toEqual({
      code: 2,
      lines: ['D/missing.yaml: no such file or directory', 'D/a.yaml: ok'],
    });
  });

  it('exits 2 for a directory with no policy files in it', async () => {
    expect(await validate(join(dir, 'empty'))).toEqual({
      code: 2,
      lines: ['D/empty: no *.yaml or *.yml files in this directory'],
    });
  });

  it('checks a file named explicitly whatever its extension', async () => {
    const { code, lines } = await validate(join(dir, 'team', 'README.md'));
    expect(code).toBe(1);
    expect(lines).toEqual([
      'D/team/README.md:1:1: the document must be a map of apiVersion, kind, metadata and spec, got "Not a policy."',
    ]);
  });
});

describe('loadPolicyFile', () => {
  it('loads the embedded default from an absolute path', async () => {
    expect(DEFAULT_POLICY_PATH).toMatch(/^\/.*\/config\/sluice\.yaml$/);
    const r = await loadPolicyFile(DEFAULT_POLICY_PATH);
    expect(r.ok && r.policy.name).toBe('default');
  });

  it('turns I/O failures into a file-level policy error', async () => {
    const file = join(dir, 'nope.yaml');
    expect(await loadPolicyFile(file)).toEqual({
      ok: false,
      errors: [{ file, line: 0, col: 0, field: '', reason: 'cannot read policy file: no such file' }],
    });
    expect(await loadPolicyFile(dir)).toEqual({
      ok: false,
      errors: [{ file: dir, line: 0, col: 0, field: '', reason: 'is a directory, not a policy file' }],
    });
  });

  it('refuses a file too large to be a policy before reading it', async () => {
    const file = join(dir, 'big.yaml');
    await writeFile(file, `${HEADER}# ${'x'.repeat(MAX_POLICY_BYTES)}\n`);
    const r = await loadPolicyFile(file);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.errors[0]?.reason).toMatch(/^file is \d+ bytes; a policy file may be at most 1048576$/);
    await rm(file);
  });
});
