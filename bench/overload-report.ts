// The overload benchmark's table (bench/overload.ts): one line per row × load level, with the
// notes and the sluice counters that explain it.
import type { AppStats } from './overload-app.ts';
import type { OverloadLoadResult } from './overload-load.ts';
import { fmt } from './lib/procs.ts';

export interface LevelResult {
  label: string;
  rate: number;
  load: OverloadLoadResult;
  /** The app's counters from the level's start until its queue drained. */
  app: AppStats;
  drained: boolean;
  /** Busy CPU on the bench cores that none of our processes used, % of one core. */
  otherCpuPct: number;
  /** Busy share of the server core during the level (everything on it), % of one core. */
  serverCpuPct: number;
  /** CPU of what fronts the app (proxy or sidecars), % of one core; undefined for direct. */
  proxyCpuPct: number | undefined;
  /** How many times the level ran (it is repeated when other work made it NOISY). */
  runs: number;
  /** How long the app kept working after the generator's last request ended. */
  appTailMs: number;
  /** Requests that reached the consumer's host: client attempts, or the consumer sidecar's count. */
  wire?: number;
  /** sluice rows: replies the sidecars made themselves during the level, "who code" → count. */
  localReplies?: [string, number][];
}

export interface RowResult {
  id: string;
  label: string;
  levels: LevelResult[];
  skipped?: string;
  error?: string;
  /** sluice rows: the backpressure series of each sidecar at the end of the row. */
  sluiceMetrics?: string[];
}

/** Send lag (p99, ms) above which the notes say the generator fell behind. */
const LAG_NOTE_MS = 2;
/** Send lag (p99, ms) at which the generator no longer keeps its schedule in any useful sense. */
const BEHIND_MS = 50;
/** Other processes' CPU above which a level is marked NOISY (% of one core). */
export const NOISY_PCT = 10;
/** A bench core this busy during a level is (nearly) saturated: noted. */
const BUSY_PCT = 90;

const pct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '—');

function notes(l: LevelResult): string {
  const { load, app } = l;
  const n: string[] = [];
  const slow = load.refused - load.refusedFast;
  if (slow > 0) n.push(`refused slow ${pct(slow / load.offered)}`);
  if (load.refused > 0) n.push(`refusal took p50 ${fmt(load.refusalMs.p50, 1)} / p99 ${fmt(load.refusalMs.p99, 1)} ms`);
  const other = Object.entries(load.other);
  if (other.length > 0) n.push(`other answers ${other.map(([k, v]) => `${k}×${v}`).join(', ')}`);
  const refusals = Object.entries(load.refusals);
  if (refusals.length > 0) n.push(`refused attempts ${refusals.map(([k, v]) => `${k}×${v}`).join(', ')}`);
  if (load.sendLagMs.p99 > LAG_NOTE_MS) {
    const behind = load.sendLagMs.p99 > BEHIND_MS ? 'GENERATOR BEHIND, figures of this level are not the target\'s: ' : '';
    n.push(`${behind}generator send lag p99 ${fmt(load.sendLagMs.p99, 1)} ms (max ${fmt(load.sendLagMs.max, 0)})`);
  }
  if (l.proxyCpuPct !== undefined) n.push(`proxy CPU ${fmt(l.proxyCpuPct, 0)}%`);
  if (l.serverCpuPct >= BUSY_PCT) n.push(`server core ${fmt(l.serverCpuPct, 0)}% busy`);
  if (l.appTailMs > 500) n.push(`app busy ${fmt(l.appTailMs / 1000, 1)} s after the last client gave up`);
  if (app.maxQueued > 0) n.push(`app queue max ${app.maxQueued}`);
  if (!l.drained) n.push(`APP NOT DRAINED (${app.queued} queued): the next level starts loaded`);
  if (l.otherCpuPct >= NOISY_PCT) n.push(`NOISY: other processes used ${fmt(l.otherCpuPct, 0)}% of a core`);
  if (l.runs > 1) n.push(`run ${l.runs} times, the earlier runs were NOISY`);
  if (load.unfinished > 0) n.push(`UNFINISHED ${load.unfinished}`);
  if (load.firstError !== undefined) n.push(`first client error: ${load.firstError.replace(/\|/g, '/')}`);
  return n.join('; ');
}

export function table(rows: RowResult[]): string {
  const out = [
    '| row | load | offered req/s | goodput req/s | p99 ms (2xx) | p99 × unloaded | p99 ms 1st-try 2xx | refused fast | timed out | app work wasted | attempts ÷ offered | wire ÷ offered | app got ÷ offered | notes |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  const foot: string[] = [];
  for (const r of rows) {
    if (r.skipped !== undefined) {
      out.push(`| ${r.label} | — | — | — | — | — | — | — | — | — | — | — | — | skipped: ${r.skipped} |`);
      continue;
    }
    const unloaded = r.levels.find((l) => l.label === 'unloaded')?.load.okLatencyMs.p99;
    for (const l of r.levels) {
      const { load, app } = l;
      const o = load.offered;
      const p99 = load.okLatencyMs.p99;
      out.push(
        `| ${r.label} | ${l.label} | ${l.rate} | ${fmt(load.ok / load.seconds, 0)} | ${fmt(p99, 1)} | ${l.label === 'unloaded' ? '1.0' : fmt(p99 / (unloaded ?? Number.NaN), 1)} | ${fmt(load.firstTryOkP99Ms, 1)} | ${pct(
          load.refusedFast / o,
        )} | ${pct(load.timedOut / o)} | ${pct(app.workMs > 0 ? app.wastedWorkMs / app.workMs : 0)} | ${fmt(load.attempts / o)} | ${fmt((l.wire ?? Number.NaN) / o)} | ${fmt(
          app.received / o,
        )} | ${notes(l)} |`,
      );
    }
    if (r.error !== undefined) {
      out.push(`| ${r.label} | — | — | — | — | — | — | — | — | — | — | — | — | FAILED, see below |`);
      foot.push(`**${r.label} failed:**\n\n\`\`\`\n${r.error.slice(0, 3000)}\n\`\`\``);
    }
    const replies = r.levels.filter((l) => l.localReplies !== undefined);
    if (replies.length > 0) {
      const lines = replies.map((l) => `  - ${l.label}: ${l.localReplies?.length ? (l.localReplies ?? []).map(([k, v]) => `${k} ${v}`).join(', ') : 'none'}`);
      foot.push(`**${r.label}: replies the sidecars made themselves** (\`sluice_local_replies_total\` by sidecar and code, per level):\n\n${lines.join('\n')}`);
    }
    if (r.sluiceMetrics !== undefined) {
      const m = r.sluiceMetrics;
      foot.push(
        `**${r.label}: backpressure series at the end of the row:** ${m.length === 0 ? 'none exported (no `sluice_*admission*`, `*credit*`, `*limit*`, `*shed*`, `*queue*` series)' : `\n\n\`\`\`\n${m.slice(0, 40).join('\n')}\n\`\`\``}`,
      );
    }
  }
  return [out.join('\n'), ...foot].join('\n\n');
}
