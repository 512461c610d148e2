// The watcher against a real directory: saves in place, editor-style renames and Kubernetes
// ConfigMap symlink swaps. Tests await the callback instead of sleeping.
import { mkdtemp, rename, rm, symlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { PolicyError } from '../../../src/policy/errors.ts';
import type { SidecarPolicy } from '../../../src/policy/types.ts';
import { watchPolicyFile, type PolicyWatcher } from '../../../src/policy/watch.ts';
import { HEADER } from './helpers.ts';

const named = (name: string): string => HEADER.replace('name: t', `name: ${name}`);

/** Callbacks as a queue the test can await one at a time. */
function recorder() {
  const events: Array<{ policy: SidecarPolicy } | { errors: readonly PolicyError[] }> = [];
  let wake: (() => void) | undefined;
  const push = (e: (typeof events)[number]): void => {
    events.push(e);
    wake?.();
  };
  return {
    events,
    onPolicy: vi.fn((policy: SidecarPolicy) => push({ policy })),
    onInvalid: vi.fn((errors: readonly PolicyError[]) => push({ errors })),
    async next(): Promise<(typeof events)[number]> {
      while (events.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return events.shift()!;
    },
  };
}

let dir: string;
let watcher: PolicyWatcher | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sluice-watch-'));
});

afterEach(async () => {
  watcher?.close();
  watcher = undefined;
  await rm(dir, { recursive: true, force: true });
});

describe('watchPolicyFile', () => {
  it('applies a valid change and reports an invalid one without applying it', { timeout: 5000 }, async () => {
    const file = join(dir, 'policy.yaml');
    await writeFile(file, named('one'));
    const r = recorder();
    watcher = watchPolicyFile(file, { ...r, debounceMs: 20 });
    await watcher.ready;
    expect(r.events).toEqual([]);

    await writeFile(file, named('two'));
    expect(await r.next()).toMatchObject({ policy: { name: 'two' } });

    await writeFile(file, `${named('three')}  admin: {port: -1}\n`);
    const invalid = await r.next();
    expect(invalid).toEqual({
      errors: [
        {
          file,
          line: 6,
          col: 17,
          field: 'spec.admin.port',
          reason: 'must be an integer from 0 to 65535, got -1',
        },
      ],
    });
    expect(r.onPolicy).toHaveBeenCalledTimes(1);

    // Back to valid, even to content seen before, is a change worth reporting.
    await writeFile(file, named('two'));
    expect(await r.next()).toMatchObject({ policy: { name: 'two' } });
  });

  it('follows an editor that saves by renaming a new file over the old one', { timeout: 5000 }, async () => {
    const file = join(dir, 'policy.yaml');
    await writeFile(file, named('one'));
    const r = recorder();
    watcher = watchPolicyFile(file, { ...r, debounceMs: 20 });
    await watcher.ready;
    await writeFile(join(dir, '.policy.yaml.swp'), named('two'));
    await rename(join(dir, '.policy.yaml.swp'), file);
    expect(await r.next()).toMatchObject({ policy: { name: 'two' } });
  });

  it('follows a Kubernetes ConfigMap update (the ..data symlink swapped)', { timeout: 5000 }, async () => {
    // The kubelet's layout: policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>.
    await mkdir(join(dir, '..v1'));
    await writeFile(join(dir, '..v1', 'policy.yaml'), named('one'));
    await symlink('..v1', join(dir, '..data'));
    await symlink(join('..data', 'policy.yaml'), join(dir, 'policy.yaml'));
    const r = recorder();
    watcher = watchPolicyFile(join(dir, 'policy.yaml'), { ...r, debounceMs: 20 });
    await watcher.ready;

    await mkdir(join(dir, '..v2'));
    await writeFile(join(dir, '..v2', 'policy.yaml'), named('two'));
    await symlink('..v2', join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    expect(await r.next()).toMatchObject({ policy: { name: 'two' } });
  });

  it('skips rewrites that leave the content unchanged', { timeout: 5000 }, async () => {
    const file = join(dir, 'policy.yaml');
    await writeFile(file, named('one'));
    const r = recorder();
    watcher = watchPolicyFile(file, { ...r, debounceMs: 20 });
    await watcher.ready;
    await writeFile(file, named('one'));
    await writeFile(join(dir, 'unrelated.txt'), 'x');
    await writeFile(file, named('two'));
    expect(await r.next()).toMatchObject({ policy: { name: 'two' } });
    expect(r.onPolicy).toHaveBeenCalledTimes(1);
    expect(r.onInvalid).not.toHaveBeenCalled();
  });

  it('reports a deleted file, and the file coming back', { timeout: 5000 }, async () => {
    const file = join(dir, 'policy.yaml');
    await writeFile(file, named('one'));
    const r = recorder();
    watcher = watchPolicyFile(file, { ...r, debounceMs: 20 });
    await watcher.ready;
    await rm(file);
    expect(await r.next()).toEqual({
      errors: [{ file, line: 0, col: 0, field: '', reason: 'cannot read policy file: no such file' }],
    });
    await writeFile(file, named('one'));
    expect(await r.next()).toMatchObject({ policy: { name: 'one' } });
  });

  it('emitInitial reports what is there at start', { timeout: 5000 }, async () => {
    const file = join(dir, 'policy.yaml');
    await writeFile(file, named('one'));
    const r = recorder();
    watcher = watchPolicyFile(file, { ...r, emitInitial: true });
    await watcher.ready;
    expect(r.events).toMatchObject([{ policy: { name: 'one' } }]);
  });

  it('calls nothing after close', { timeout: 5000 }, async () => {
    const file = join(dir, 'policy.yaml');
    await writeFile(file, named('one'));
    const closed = recorder();
    watcher = watchPolicyFile(file, { ...closed, debounceMs: 10 });
    await watcher.ready;
    // A second watcher with the same debounce is the barrier: once it has seen the change, the
    // closed one's timer would have fired too.
    const open = recorder();
    const other = watchPolicyFile(file, { ...open, debounceMs: 10 });
    try {
      await other.ready;
      watcher.close();
      await writeFile(file, named('two'));
      expect(await open.next()).toMatchObject({ policy: { name: 'two' } });
      expect(closed.events).toEqual([]);
    } finally {
      other.close();
    }
  });
});
