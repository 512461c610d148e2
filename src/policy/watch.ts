// Follows a policy file as it changes on disk. The directory is watched, not the file: Kubernetes
// updates a mounted ConfigMap by swapping a `..data` symlink and editors save by renaming a new
// file over the old one, and a watch on the old file would miss both.
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { PolicyError } from './errors.ts';
import { readPolicyText } from './load.ts';
import { parsePolicy } from './parse.ts';
import type { SidecarPolicy } from './types.ts';

export interface WatchOptions {
  /** A new, valid policy: the file's content changed and it parses. */
  onPolicy(policy: SidecarPolicy): void;
  /** The file changed and is invalid or unreadable; the caller keeps serving its last good policy. */
  onInvalid(errors: readonly PolicyError[]): void;
  /** Quiet time after the last change before the file is read; saves arrive as bursts of events. */
  debounceMs?: number;
  /**
   * Report the content found at start too. Off by default, for callers that loaded the file
   * themselves; on, the watcher can be the only reader, with no gap between load and watch.
   */
  emitInitial?: boolean;
}

export interface PolicyWatcher {
  /** Settles once the file has been read at start; changes after this are all reported. */
  readonly ready: Promise<void>;
  close(): void;
}

export function watchPolicyFile(path: string, options: WatchOptions): PolicyWatcher {
  const { onPolicy, onInvalid, debounceMs = 200, emitInitial = false } = options;
  let lastKey: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let reading: Promise<void> | undefined;
  let again = false;
  let initial = true;

  // Reads one at a time; a change that lands mid-read gets one more read afterwards.
  const check = (): Promise<void> => {
    if (reading) {
      again = true;
      return reading;
    }
    reading = (async () => {
      do {
        again = false;
        const text = await readPolicyText(path);
        if (closed) return;
        // Touches, unrelated files in the directory and a re-read of an unchanged file all land
        // here; only a change of content (or of the failure) is worth a callback.
        const report = emitInitial || !initial;
        initial = false;
        const key = typeof text === 'string' ? `text:${sha256(text)}` : `error:${JSON.stringify(text)}`;
        if (key === lastKey) continue;
        lastKey = key;
        if (!report) continue;
        const result = typeof text === 'string' ? parsePolicy(text, path) : text;
        if (result.ok) onPolicy(result.policy);
        else onInvalid(result.errors);
      } while (again && !closed);
    })().finally(() => {
      reading = undefined;
    });
    return reading;
  };

  const schedule = (): void => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(() => void check(), debounceMs);
  };

  // Any event in the directory triggers a read: filenames are not reported reliably on every
  // platform, and a symlink swap names `..data`, not the policy file.
  const watcher: FSWatcher = watch(dirname(resolve(path)), schedule);
  watcher.on('error', (err) => {
    if (closed) return;
    onInvalid([{ file: path, line: 0, col: 0, field: '', reason: `cannot watch policy file: ${err.message}` }]);
  });

  return {
    ready: check(),
    close() {
      closed = true;
      clearTimeout(timer);
      watcher.close();
    },
  };
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
