// The diff behind the webhook's answer and the CLI's in-place YAML edit: applied by a separate
// RFC 6902 implementation, it must give exactly the target, with small patches for the shapes
// injection makes (named elements inserted, keys added).
import { describe, expect, it } from 'vitest';
import { diff, escapePointer, unescapePointer } from '../../../src/inject/json-patch.ts';
import { applyJsonPatch } from '../../support/inject-k8s.ts';

function roundTrip(a: unknown, b: unknown) {
  const ops = diff(a, b);
  expect(applyJsonPatch(a, ops as never)).toEqual(b);
  return ops;
}

describe('JSON Patch diff', () => {
  it('escapes ~ and / in keys (RFC 6901)', () => {
    expect(escapePointer('sluice.dev/injected')).toBe('sluice.dev~1injected');
    expect(escapePointer('a~/b')).toBe('a~0~1b');
    expect(unescapePointer('a~0~1b')).toBe('a~/b');
    expect(roundTrip({ metadata: { annotations: { 'x/y': '1' } } }, { metadata: { annotations: { 'x/y': '1', 'sluice.dev/injected': 'i' } } })).toEqual([
      { op: 'add', path: '/metadata/annotations/sluice.dev~1injected', value: 'i' },
    ]);
  });

  it('is empty for equal values', () => {
    expect(diff({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] })).toEqual([]);
  });

  it('adds a missing list whole, and appends to an existing one with "-"', () => {
    expect(roundTrip({ spec: { containers: [{ name: 'app' }] } }, { spec: { containers: [{ name: 'app' }], initContainers: [{ name: 'sluice' }] } })).toEqual([
      { op: 'add', path: '/spec/initContainers', value: [{ name: 'sluice' }] },
    ]);
    expect(roundTrip({ v: [{ name: 'a' }] }, { v: [{ name: 'a' }, { name: 's' }] })).toEqual([{ op: 'add', path: '/v/-', value: { name: 's' } }]);
  });

  it('inserts a named element in front and edits the others where they moved to', () => {
    const a = { containers: [{ name: 'app', env: [{ name: 'A', value: '1' }] }, { name: 'log' }] };
    const b = { containers: [{ name: 'sluice' }, { name: 'app', env: [{ name: 'A', value: '1' }, { name: 'HTTP_PROXY', value: 'p' }] }, { name: 'log', env: [{ name: 'HTTP_PROXY', value: 'p' }] }] };
    expect(roundTrip(a, b)).toEqual([
      { op: 'add', path: '/containers/0', value: { name: 'sluice' } },
      { op: 'add', path: '/containers/1/env/-', value: { name: 'HTTP_PROXY', value: 'p' } },
      { op: 'add', path: '/containers/2/env', value: [{ name: 'HTTP_PROXY', value: 'p' }] },
    ]);
  });

  it('falls back to element-wise edits or a replace when elements moved or went', () => {
    roundTrip({ l: [{ name: 'a' }, { name: 'b' }] }, { l: [{ name: 'b' }, { name: 'a' }] });
    roundTrip({ l: [1, 2, 3] }, { l: [3] });
    roundTrip({ l: [1, 1] }, { l: [1, 1, 1] });
    roundTrip({ l: [{ x: 1 }] }, { l: [{ x: 2 }] });
    expect(roundTrip({ a: 1, b: 2 }, { b: 3 })).toEqual([
      { op: 'remove', path: '/a' },
      { op: 'replace', path: '/b', value: 3 },
    ]);
    expect(roundTrip(1, { a: 1 })).toEqual([{ op: 'replace', path: '', value: { a: 1 } }]);
  });
});
