// The overhead benchmark's report (bench/run.ts): one header for the run, then one markdown
// table per scenario, every ratio against that table's direct row.
import os from 'node:os';
import { CLK_TCK } from './lib/cpu.ts';
import { NODE, fmt, loadAverage, onPath, proxyVersions, sluiceRevision, versionOf } from './lib/procs.ts';
import type { RowResult, Scenario } from './overhead-rows.ts';
import { P } from './overhead-params.ts';

/** Date, machine, node and sluice revision, and the quiet wait: true of every table of the run. */
export function commonHeader(): string[] {
  const cpus = os.cpus();
  return [
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus.length} × ${cpus[0]?.model ?? 'unknown CPU'}, ${fmt(os.totalmem() / 2 ** 30, 1)} GiB RAM, ${os.type()} ${os.release()}, load average at start ${loadAverage()}`,
    `- node: ${versionOf(NODE, ['--version'])} (${NODE}); sluice ${sluiceRevision()}`,
    `- before each measured phase the bench waits up to ${P.quietWaitSeconds}s for both CPUs to be idle (BENCH_QUIET_WAIT_SECONDS; 0 = don't wait)${P.nice === undefined ? '' : `; all bench processes at nice ${P.nice} (BENCH_NICE) to keep other work on the machine from interfering`}`,
  ];
}

/** The run's header; without overhead scenarios (only the propagation table) the common lines alone. */
export function header(scenarios: readonly Scenario[]): string {
  if (scenarios.length === 0) return ['## sluice benchmark', '', ...commonHeader()].join('\n');
  const h2 = scenarios.some((sc) => sc.id !== 'http1');
  const tools = [versionOf('wrk', ['-v']), ...(onPath('h2load') === undefined ? [] : [versionOf('h2load', ['--version'])])];
  const lines = [
    '## sluice overhead benchmark',
    '',
    ...commonHeader(),
    `- tools: ${tools.join('; ')}; ${proxyVersions()}`,
    `- sluice: \`node ${[...P.sluiceNodeFlags, 'dist/main.js'].join(' ')} proxy --policy <generated>\` (BENCH_SLUICE_NODE_FLAGS), default log level; outbound upstream \`bench\` with default timeouts/retries, \`unknownHosts: reject\`${h2 ? '; HTTP/2 and gRPC tables: `protocol: http2` on the upstream and on the inbound app' : ''}`,
    `- pinning: load generator on CPU ${P.loadCpu}; upstream and proxies on CPU ${P.serverCpu} (taskset)`,
    ...scenarios.flatMap((sc) => sc.headerLines()),
    `- proxy CPU: utime+stime from /proc/PID/stat of the proxy process tree over the saturation run ÷ requests (calls, messages) the generator completed in it (CLK_TCK ${CLK_TCK}: resolution ${fmt(1000 / CLK_TCK, 0)} ms of CPU per run)`,
    '- peak RSS: VmHWM from /proc/PID/status at the end of the row, summed over the proxy processes (nginx master+worker; both sidecars in the outbound→inbound row)',
  ];
  return lines.join('\n');
}

/** "Other CPU" above this share of a core marks a row as measured on a busy machine. */
const NOISY_PCT = 10;
/** A generator this busy over its saturation run is likely what limits the row. */
const GENERATOR_BOUND_PCT = 90;

function fmtInt(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '—';
  return Math.round(n).toLocaleString('en-US');
}

export function table(sc: Scenario, rows: readonly RowResult[]): string {
  const c = sc.columns;
  const direct = rows.find((r) => r.label === 'direct');
  const latency = (r: RowResult | undefined): { p50: number; p99: number } | undefined => r?.fixed?.latencyMs ?? r?.sat?.latencyMs;
  const out: string[] = [];
  out.push(
    `| row | ${c.throughput} |${c.mbPerSec ? ' MB/s |' : ''} × direct | ${c.p50} | ${c.p99} | p99 × direct | proxy CPU µs/${c.unit} | proxy peak RSS MiB | errors | notes |`,
  );
  out.push(`|---|---:|${c.mbPerSec ? '---:|' : ''}---:|---:|---:|---:|---:|---:|---|---|`);
  const footnotes: string[] = [];
  let anyNoisy = false;
  for (const r of rows) {
    if (r.skipped !== undefined) {
      out.push(`| ${r.label} | — |${c.mbPerSec ? ' — |' : ''} — | — | — | — | — | — | — | skipped: ${r.skipped} |`);
      continue;
    }
    if (r.error !== undefined && (r.sat === undefined || (sc.fixed !== undefined && r.fixed === undefined))) {
      footnotes.push(`**${sc.title}, ${r.label} failed:**\n\n\`\`\`\n${r.error.slice(0, 3000)}\n\`\`\``);
    }
    const isDirect = r === direct;
    const satRatio = !isDirect && direct?.sat && r.sat ? r.sat.perSec / direct.sat.perSec : undefined;
    const lat = latency(r);
    const directLat = latency(direct);
    const p99Ratio = !isDirect && directLat && lat ? lat.p99 / directLat.p99 : undefined;
    const errs: string[] = [...(r.sat?.errors ?? [])];
    if (r.fixed) {
      if (r.fixed.non2xx > 0) errs.push(`fixed ${c.nonOk} ${r.fixed.non2xx} (${JSON.stringify(r.fixed.statuses)})`);
      if (r.fixed.errors > 0) errs.push(`fixed errors ${r.fixed.errors} (${r.fixed.firstError ?? ''})`);
      if (r.fixed.incomplete > 0) errs.push(`fixed unanswered ${r.fixed.incomplete}`);
    }
    if (r.error !== undefined) errs.push('FAILED, see below');
    const notes: string[] = [];
    if (r.rssDetail) notes.push(`RSS ${r.rssDetail}`);
    const noisy = (r.otherCpuSatPct ?? 0) >= NOISY_PCT || (r.otherCpuFixedPct ?? 0) >= NOISY_PCT;
    if (r.notQuiet !== undefined && !noisy) notes.push(`machine was busy as ${r.notQuiet.join(' and ')} started`);
    if (noisy) {
      notes.push(
        r.otherCpuFixedPct === undefined
          ? `NOISY: other processes used ${fmt(r.otherCpuSatPct, 0)}% of a core during saturation`
          : `NOISY: other processes used ${fmt(r.otherCpuSatPct, 0)}% / ${fmt(r.otherCpuFixedPct, 0)}% of a core during saturation / fixed rate`,
      );
      anyNoisy = true;
    }
    if (r.generatorCpuPct !== undefined && r.generatorCpuPct >= GENERATOR_BOUND_PCT) {
      notes.push(`load generator used ${fmt(r.generatorCpuPct, 0)}% of its core: throughput may be the generator's limit`);
    }
    if (r.fixed && r.sat && r.sat.perSec < P.rate * 1.2) notes.push(`saturation is not well above ${P.rate}/s: fixed-rate latency is mostly queueing`);
    if (r.fixed && r.fixed.sendLagMs.p99 > 1) notes.push(`generator send lag p99 ${fmt(r.fixed.sendLagMs.p99)} ms`);
    const cells = [
      r.label,
      fmtInt(r.sat?.perSec),
      ...(c.mbPerSec ? [fmt(r.sat?.mbPerSec, 1)] : []),
      isDirect ? '1.00' : fmt(satRatio),
      fmt(lat?.p50, 3),
      fmt(lat?.p99, 3),
      isDirect ? '1.00' : fmt(p99Ratio),
      isDirect ? '—' : fmt(r.cpuUsPerUnit, 1),
      isDirect ? '—' : fmt(r.rssMiB, 1),
      errs.length === 0 ? '0' : errs.join('; '),
      notes.join('; '),
    ];
    out.push(`| ${cells.join(' | ')} |`);
  }
  if (anyNoisy) {
    footnotes.unshift(
      `**Warning:** rows marked NOISY ran while other processes used ≥${NOISY_PCT}% of a core on the bench CPUs; ` +
        'their figures understate what the proxies can do. Re-run on an idle machine.',
    );
  }
  return [`### ${sc.title}`, out.join('\n'), ...footnotes].join('\n\n');
}
