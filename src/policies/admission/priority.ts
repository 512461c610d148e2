// A request's priority, from the policy's priority header. Names in the header list are as the
// client sent them, so they are compared case-insensitively; the value is trimmed and compared
// case-insensitively too, and anything unknown (or no header) is `default`: a typo must not
// make a request sheddable, nor critical.
import type { Priority } from '../../policy/types.ts';
import type { HeaderList } from '../../stack/types.ts';

/** Every priority, most important first: the bounded values of the metrics' `priority` label. */
export const PRIORITIES: readonly Priority[] = Object.freeze(['critical', 'default', 'sheddable']);

/** `name` is lower-case (the policy parser guarantees it). The first occurrence wins. */
export function readPriority(headers: HeaderList, name: string): Priority {
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const n = headers[i]!;
    if (n.length === name.length && n.toLowerCase() === name) return parsePriority(headers[i + 1]!);
  }
  return 'default';
}

export function parsePriority(value: string): Priority {
  const v = value.trim().toLowerCase();
  return v === 'critical' || v === 'sheddable' ? v : 'default';
}
