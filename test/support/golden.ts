// Golden files: expected output kept in the repository next to its input. UPDATE_GOLDEN=1 writes
// what the code produces now (then review the diff); without it a missing file is an error.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { expect } from 'vitest';
import { ROOT } from './cli.ts';

export const UPDATE_GOLDEN = process.env.UPDATE_GOLDEN === '1';

/** Compares actual with ROOT/path, or writes it there under UPDATE_GOLDEN=1. */
export function expectGolden(path: string, actual: string): void {
  const full = `${ROOT}/${path}`;
  if (UPDATE_GOLDEN) {
    writeFileSync(full, actual);
    return;
  }
  if (!existsSync(full)) throw new Error(`${path} is missing: run with UPDATE_GOLDEN=1 to write it`);
  expect(actual, `${path} (UPDATE_GOLDEN=1 rewrites it)`).toBe(readFileSync(full, 'utf8'));
}
