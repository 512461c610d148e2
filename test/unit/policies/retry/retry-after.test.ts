import { describe, expect, it } from 'vitest';
import { SluiceError, toLocalReply } from '../../../../src/stack/errors.ts';
import { parseHttpDate, parsePreciseRetryMs, parseRetryAfterMs, RETRY_AFTER_MAX_MS } from '../../../../src/policies/retry/retry-after.ts';

// Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date.
const RFC_EXAMPLE_MS = Date.UTC(1994, 10, 6, 8, 49, 37);
const NOW = RFC_EXAMPLE_MS - 120_000; // two minutes before it

describe('parseRetryAfterMs', () => {
  it.each([
    ['0', 0],
    ['1', 1000],
    ['120', 120_000],
    ['007', 7000],
    ['  30  ', 30_000], // surrounding whitespace is not part of the value
    ['86400', RETRY_AFTER_MAX_MS],
    ['86401', RETRY_AFTER_MAX_MS],
    ['99999999999999999999999999', RETRY_AFTER_MAX_MS],
    ['9'.repeat(400), RETRY_AFTER_MAX_MS], // Number() gives Infinity; still capped
  ])('delay-seconds %j → %i ms', (value, expected) => {
    expect(parseRetryAfterMs(value, NOW)).toBe(expected);
  });

  it.each([
    ['IMF-fixdate', 'Sun, 06 Nov 1994 08:49:37 GMT'],
    ['RFC 850', 'Sunday, 06-Nov-94 08:49:37 GMT'],
    ['asctime', 'Sun Nov  6 08:49:37 1994'],
  ])('HTTP-date in %s form', (_form, value) => {
    expect(parseRetryAfterMs(value, NOW)).toBe(120_000);
  });

  it('a date in the past (or now) is 0', () => {
    expect(parseRetryAfterMs('Sun, 06 Nov 1994 08:49:37 GMT', RFC_EXAMPLE_MS)).toBe(0);
    expect(parseRetryAfterMs('Sun, 06 Nov 1994 08:49:37 GMT', RFC_EXAMPLE_MS + 3_600_000)).toBe(0);
  });

  it('a date more than a day ahead is one day', () => {
    expect(parseRetryAfterMs('Fri, 01 Jan 2100 00:00:00 GMT', NOW)).toBe(RETRY_AFTER_MAX_MS);
  });

  it.each([
    undefined,
    '',
    '   ',
    '-1',
    '+5',
    '1.5',
    '1e3',
    '0x10',
    '5 s',
    'soon',
    'Sun, 06 Nov 1994 08:49:37', // no GMT
    'Sun, 06 Nov 1994 08:49:37 UTC', // only GMT is HTTP
    'Sun, 6 Nov 1994 08:49:37 GMT', // IMF-fixdate has two-digit days
    'Sun, 06 Foo 1994 08:49:37 GMT',
    'Sun, 30 Feb 1994 08:49:37 GMT', // no such day
    'Sun, 00 Nov 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 24:00:00 GMT',
    'Sun, 06 Nov 1994 08:60:00 GMT',
    'Sun, 06 Nov 1994 08:49:61 GMT',
    '1994-11-06T08:49:37Z', // ISO 8601 is not an HTTP-date, though Date.parse takes it
    'Nov 1994',
  ])('garbage %j → undefined', (value) => {
    expect(parseRetryAfterMs(value, NOW)).toBeUndefined();
  });
});

describe('parseHttpDate', () => {
  it('reads asctime as GMT, whatever the local zone', () => {
    expect(parseHttpDate('Sun Nov  6 08:49:37 1994', NOW)).toBe(RFC_EXAMPLE_MS);
    expect(parseHttpDate('Sun Nov 16 08:49:37 1994', NOW)).toBe(Date.UTC(1994, 10, 16, 8, 49, 37));
  });

  it('is lenient about case in names', () => {
    expect(parseHttpDate('SUN, 06 NOV 1994 08:49:37 GMT', NOW)).toBe(RFC_EXAMPLE_MS);
  });

  it('reads a leap second as :59', () => {
    expect(parseHttpDate('Sat, 31 Dec 2016 23:59:60 GMT', NOW)).toBe(Date.UTC(2016, 11, 31, 23, 59, 59));
  });

  it('RFC 850 two-digit years: more than 50 years ahead means the past century', () => {
    const now2025 = Date.UTC(2025, 0, 1);
    expect(parseHttpDate('Monday, 01-Jan-75 00:00:00 GMT', now2025)).toBe(Date.UTC(2075, 0, 1)); // exactly +50
    expect(parseHttpDate('Saturday, 01-Jan-76 00:00:00 GMT', now2025)).toBe(Date.UTC(1976, 0, 1)); // +51
    expect(parseHttpDate('Wednesday, 01-Jan-25 00:00:00 GMT', now2025)).toBe(Date.UTC(2025, 0, 1));
  });
});

describe('the precise hint (sluice-retry-after-ms)', () => {
  it.each([
    ['25', 25],
    ['0', 0],
    ['3600000', 3_600_000],
    ['3600001', undefined],
    ['1.5', undefined],
    ['-1', undefined],
    [undefined, undefined],
  ])('%s reads as %s', (value, ms) => {
    expect(parsePreciseRetryMs(value)).toBe(ms);
  });

  it('a local reply with a sub-second wait carries it next to Retry-After in whole seconds', () => {
    const reply = toLocalReply(new SluiceError('shed', undefined, { retryAfterS: 0.025 }));
    expect(reply.headers).toMatchObject({ 'retry-after': '1', 'sluice-retry-after-ms': '25' });
    expect(toLocalReply(new SluiceError('shed', undefined, { retryAfterS: 2 })).headers['sluice-retry-after-ms']).toBeUndefined();
  });
});
