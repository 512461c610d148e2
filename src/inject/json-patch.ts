// An RFC 6902 JSON Patch from one JSON value to another: what the webhook answers, and what the
// CLI applies to the YAML document so that everything it did not change keeps its comments and
// layout. Arrays of named things (containers, env, volumes, ports) are aligned by name, so adding
// a sidecar is one `add`, not a replaced list a concurrent mutation would be lost in.

export type PatchOp =
  | { readonly op: 'add'; readonly path: string; readonly value: unknown }
  | { readonly op: 'remove'; readonly path: string }
  | { readonly op: 'replace'; readonly path: string; readonly value: unknown };

/** RFC 6901: `~` and `/` are escaped in a reference token (`sluice.dev~1injected`). */
export function escapePointer(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

export function unescapePointer(token: string): string {
  return token.replace(/~1/g, '/').replace(/~0/g, '~');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

/** An element's identity for alignment: its name when it is a named object, else its whole value. */
function identity(v: unknown): string {
  return isObject(v) && typeof v.name === 'string' ? `name:${v.name}` : `value:${JSON.stringify(v)}`;
}

/**
 * Ops turning array a into b when b is a with elements inserted (and, for named elements, changed
 * in place), in the order they apply; undefined when the two do not line up that way.
 */
function insertions(a: readonly unknown[], b: readonly unknown[], path: string): PatchOp[] | undefined {
  const ids = a.map(identity);
  if (new Set(ids).size !== ids.length) return undefined;
  const bIds = b.map(identity);
  if (new Set(bIds).size !== bIds.length) return undefined;
  const ops: PatchOp[] = [];
  let next = 0; // the next element of a still to be matched
  let length = a.length; // the array's length once the ops so far are applied
  for (let j = 0; j < b.length; j++) {
    if (next < a.length && bIds[j] === ids[next]) {
      ops.push(...diff(a[next], b[j], `${path}/${j}`));
      next++;
    } else if (ids.includes(bIds[j] as string)) {
      return undefined; // an element of a moved
    } else {
      // After the inserts before it, j is where this element goes; at the end, append with "-".
      ops.push({ op: 'add', path: `${path}/${j === length ? '-' : j}`, value: b[j] });
      length++;
    }
  }
  return next === a.length ? ops : undefined;
}

/** The patch turning a into b; [] when they are equal. */
export function diff(a: unknown, b: unknown, path = ''): PatchOp[] {
  if (deepEqual(a, b)) return [];
  if (isObject(a) && isObject(b)) {
    const ops: PatchOp[] = [];
    for (const k of Object.keys(a)) if (!Object.hasOwn(b, k)) ops.push({ op: 'remove', path: `${path}/${escapePointer(k)}` });
    for (const [k, v] of Object.entries(b)) {
      const p = `${path}/${escapePointer(k)}`;
      ops.push(...(Object.hasOwn(a, k) ? diff(a[k], v, p) : [{ op: 'add' as const, path: p, value: v }]));
    }
    return ops;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const inserted = b.length >= a.length ? insertions(a, b, path) : undefined;
    if (inserted !== undefined) return inserted;
    if (a.length === b.length) return a.flatMap((x, i) => diff(x, b[i], `${path}/${i}`));
  }
  return [{ op: 'replace', path, value: b }];
}
