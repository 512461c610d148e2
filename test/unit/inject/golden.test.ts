// Golden files for `sluice inject`: test/golden/inject/<case>.in.yaml in, <case>.out.yaml out, and
// <case>.stderr.txt (exit code, then what was reported). A first line `# sluice inject ARGS` in the
// input gives the flags. UPDATE_GOLDEN=1 rewrites the expected files from what the code does now.
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { runInject, type InjectIo } from '../../../src/cli/inject.ts';
import { ROOT } from '../../support/cli.ts';
import { expectGolden } from '../../support/golden.ts';
import { k8sProblems } from '../../support/inject-k8s.ts';

const DIR = 'test/golden/inject';
/** Pinned, so a version bump does not rewrite every golden file; the default is tested apart. */
const IMAGE = 'ghcr.io/sluice-dev/sluice:0.1.0';

async function inject(args: string[], stdin = ''): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  const err: string[] = [];
  const io: InjectIo = { readStdin: async () => stdin, stdinIsTty: false, out: (t) => (out += t), err: (l) => err.push(l) };
  const code = await runInject(args, io);
  return { code, out, err: err.map((l) => `${l}\n`).join('') };
}

/** Every object of a stream, with a List's items. */
function objectsOf(text: string): unknown[] {
  return (parseAllDocuments(text) as unknown as { toJS(): unknown }[]).flatMap((d) => {
    const v = d.toJS() as { kind?: string; items?: unknown[] } | null;
    return v?.kind === 'List' ? (v.items ?? []) : [v];
  });
}

const cases = readdirSync(`${ROOT}/${DIR}`).filter((f) => f.endsWith('.in.yaml')).map((f) => f.slice(0, -'.in.yaml'.length));

describe('sluice inject: golden files', () => {
  it('has its cases', () => {
    expect(cases).toEqual(expect.arrayContaining(['deployment', 'kinds', 'jobs', 'legacy', 'annotations', 'skipped', 'list', 'anchors', 'refused']));
  });

  for (const name of cases) {
    describe(name, () => {
      const file = `${DIR}/${name}.in.yaml`;
      const header = /^# sluice inject(.*)$/m.exec(readFileSync(`${ROOT}/${file}`, 'utf8').split('\n')[0] ?? '');
      const flags = header === null ? [] : (header[1] as string).trim().split(/\s+/).filter((s) => s !== '');
      const args = [...(flags.includes('--image') ? [] : ['--image', IMAGE]), ...flags, file];

      it('writes the expected manifests and report', async () => {
        const r = await inject(args);
        expectGolden(`${DIR}/${name}.stderr.txt`, `exit ${r.code}\n${r.err}`);
        if (r.code === 0) expectGolden(`${DIR}/${name}.out.yaml`, r.out);
        else expect(r.out).toBe('');
      });

      it('writes objects that are valid Kubernetes objects', async () => {
        const r = await inject(args);
        if (r.code !== 0) return;
        for (const obj of objectsOf(r.out)) expect(k8sProblems(obj), JSON.stringify(obj).slice(0, 80)).toEqual([]);
      });

      it('changes nothing on a second run, byte for byte', async () => {
        const first = await inject(args);
        if (first.code !== 0) return;
        const second = await inject([...args.slice(0, -1), '-'], first.out);
        expect(second.code).toBe(0);
        expect(second.out).toBe(first.out);
        expect(second.err).not.toMatch(/: injected/);
      });
    });
  }
});
