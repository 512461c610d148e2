import { describe, expect, it } from 'vitest';
import { readPriority } from '../../../../src/policies/admission/priority.ts';

describe('readPriority', () => {
  it.each([
    ['critical', ['sluice-priority', 'critical'], 'critical'],
    ['sheddable', ['sluice-priority', 'sheddable'], 'sheddable'],
    ['default', ['sluice-priority', 'default'], 'default'],
    ['the name in any case', ['Sluice-Priority', 'sheddable'], 'sheddable'],
    ['the value in any case, trimmed', ['sluice-priority', ' Critical '], 'critical'],
    ['an unknown value is default', ['sluice-priority', 'urgent'], 'default'],
    ['an empty value is default', ['sluice-priority', ''], 'default'],
    ['no header is default', ['x-other', 'critical'], 'default'],
    ['a value is never read as a name', ['x-a', 'sluice-priority', 'x-b', 'sheddable'], 'default'],
    ['the first occurrence wins', ['sluice-priority', 'sheddable', 'sluice-priority', 'critical'], 'sheddable'],
  ])('%s', (_name, headers, expected) => {
    expect(readPriority(headers, 'sluice-priority')).toBe(expected);
  });
});
