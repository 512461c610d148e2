// Reading a policy file from disk. I/O failures come back as policy errors, so callers (the proxy
// at startup, the watcher, `sluice validate`) have one failure path and one message format.
import { readFile, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { ParseResult } from './errors.ts';
import { parsePolicy } from './parse.ts';

/** The embedded default policy, `sluice proxy` runs on it when given none. */
export const DEFAULT_POLICY_PATH = fileURLToPath(new URL('../../config/sluice.yaml', import.meta.url));

/** Policies are a few kilobytes; a file this large is a mistake, not a policy worth parsing. */
export const MAX_POLICY_BYTES = 1024 * 1024;

export async function loadPolicyFile(path: string): Promise<ParseResult> {
  const read = await readPolicyText(path);
  return typeof read === 'string' ? parsePolicy(read, path) : read;
}

/** The file's text, or the failure as a ParseResult; the watcher uses the text to notice no-op changes. */
export async function readPolicyText(path: string): Promise<string | ParseResult> {
  try {
    const info = await stat(path);
    if (info.isDirectory()) return fileError(path, 'is a directory, not a policy file');
    if (info.size > MAX_POLICY_BYTES) {
      return fileError(path, `file is ${info.size} bytes; a policy file may be at most ${MAX_POLICY_BYTES}`);
    }
    return await readFile(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const reason =
      e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message;
    return fileError(path, `cannot read policy file: ${reason}`);
  }
}

function fileError(file: string, reason: string): ParseResult {
  return { ok: false, errors: [{ file, line: 0, col: 0, field: '', reason }] };
}
