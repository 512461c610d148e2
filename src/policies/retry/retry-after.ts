// Retry-After (RFC 9110 §10.2.3): either delay-seconds (1*DIGIT) or an HTTP-date (§5.6.7). Parsed
// strictly by hand: Date.parse accepts far more than HTTP allows ("1", "2024") and reads the
// asctime form in local time, where HTTP means GMT.

/** Longest wait we believe: larger values (typos, epoch seconds sent as a delay) become one day. */
export const RETRY_AFTER_MAX_MS = 86_400_000;

const MONTHS: Readonly<Record<string, number>> = {
  jan: 0, feb: 1, mar: 2, apr: 3, may: 4, jun: 5, jul: 6, aug: 7, sep: 8, oct: 9, nov: 10, dec: 11,
};

// IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
const IMF_FIXDATE = /^(?:mon|tue|wed|thu|fri|sat|sun), (\d{2}) ([a-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/i;
// obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
const RFC850_DATE =
  /^(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday), (\d{2})-([a-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/i;
// obsolete asctime: Sun Nov  6 08:49:37 1994
const ASCTIME_DATE = /^(?:mon|tue|wed|thu|fri|sat|sun) ([a-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/i;

const DELAY_SECONDS = /^\d+$/;

/**
 * Milliseconds to wait from `nowEpochMs` (wall clock, Date.now()), or undefined when the value is
 * absent or not a valid Retry-After. A date in the past gives 0; anything above one day gives one day.
 */
export function parseRetryAfterMs(value: string | undefined, nowEpochMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (DELAY_SECONDS.test(v)) return Math.min(Number(v) * 1000, RETRY_AFTER_MAX_MS);
  const dateMs = parseHttpDate(v, nowEpochMs);
  if (dateMs === undefined) return undefined;
  return Math.min(Math.max(0, dateMs - nowEpochMs), RETRY_AFTER_MAX_MS);
}

/** Epoch ms of an HTTP-date in any of its three forms, or undefined. */
export function parseHttpDate(v: string, nowEpochMs: number): number | undefined {
  let m = IMF_FIXDATE.exec(v);
  if (m) return utc(Number(m[3]), m[2]!, Number(m[1]), m[4]!, m[5]!, m[6]!);
  m = ASCTIME_DATE.exec(v);
  if (m) return utc(Number(m[6]), m[1]!, Number(m[2]!.trim()), m[3]!, m[4]!, m[5]!);
  m = RFC850_DATE.exec(v);
  if (m) {
    // §5.6.7: a two-digit year more than 50 years in the future means the most recent past year
    // with the same last two digits.
    const thisYear = new Date(nowEpochMs).getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + Number(m[3]);
    if (year > thisYear + 50) year -= 100;
    return utc(year, m[2]!, Number(m[1]), m[4]!, m[5]!, m[6]!);
  }
  return undefined;
}

function utc(year: number, monthName: string, day: number, hh: string, mm: string, ss: string): number | undefined {
  const month = MONTHS[monthName.toLowerCase()];
  const h = Number(hh);
  const min = Number(mm);
  const s = Math.min(Number(ss), 59); // a leap second (60) reads as :59
  if (month === undefined || day < 1 || h > 23 || min > 59 || Number(ss) > 60) return undefined;
  const ms = Date.UTC(year, month, day, h, min, s);
  // Date.UTC rolls Feb 30 over into March: reject dates that do not exist.
  if (new Date(ms).getUTCDate() !== day) return undefined;
  return ms;
}

/** sluice-retry-after-ms: whole milliseconds, at most an hour; anything else is ignored. */
export function parsePreciseRetryMs(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,7}$/.test(value)) return undefined;
  const ms = Number(value);
  return ms <= 3_600_000 ? ms : undefined;
}
