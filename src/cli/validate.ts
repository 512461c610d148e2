// `sluice validate PATH...`: lints policy files the way CI in a policy repository runs it.
// Exit codes: 0 all valid, 1 some file invalid, 2 usage (no paths, a missing path, nothing to check).
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { formatPolicyError } from '../policy/errors.ts';
import { loadPolicyFile } from '../policy/load.ts';

const POLICY_FILE = /\.ya?ml$/;

export async function runValidate(paths: readonly string[], out: (line: string) => void): Promise<number> {
  if (paths.length === 0) {
    out('usage: sluice validate PATH... (policy files, or directories searched for *.yaml and *.yml)');
    return 2;
  }
  let usageError = false;
  let invalid = false;
  for (const path of paths) {
    const files = await policyFiles(path);
    if (typeof files === 'string') {
      out(`${path}: ${files}`);
      usageError = true;
      continue;
    }
    for (const file of files) {
      const result = await loadPolicyFile(file);
      if (result.ok) out(`${file}: ok`);
      else {
        invalid = true;
        for (const e of result.errors) out(formatPolicyError(e));
      }
    }
  }
  return usageError ? 2 : invalid ? 1 : 0;
}

/** The files a path names, in a stable order, or why it names none. */
async function policyFiles(path: string): Promise<string[] | string> {
  let info;
  try {
    info = await stat(path);
  } catch {
    return 'no such file or directory';
  }
  if (!info.isDirectory()) return [path];
  const files = await walk(path);
  return files.length > 0 ? files : 'no *.yaml or *.yml files in this directory';
}

/**
 * Hidden entries are skipped (.git, and the `..data` copies of a mounted ConfigMap, which
 * would list each file twice); symlinked directories are not followed, so a loop cannot hang CI.
 */
async function walk(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const files: string[] = [];
  for (const entry of entries) {
    if (entry.name.startsWith('.')) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await walk(path)));
    else if (POLICY_FILE.test(entry.name) && (entry.isFile() || (await isFile(path)))) files.push(path);
  }
  return files;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
