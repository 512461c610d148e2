// The propagation table of bench/run.ts: one row per round, one for all rounds, then the goal
// and the service's memory. Times are ms from the webhook POST (t0) unless the column says
// otherwise.
import { fmt } from './lib/procs.ts';
import { percentile } from './lib/stats.ts';
import { P } from './overhead-params.ts';
import type { PropagationResult, RoundResult } from './propagation.ts';

export const PROPAGATION_TITLE = 'Config propagation';
/** The goal: every sidecar applied within this long of the commit being fetched. */
const GOAL_MS = 1000;
const NOISY_PCT = 10;

const mib = (kib: number | undefined): string => (kib === undefined ? '—' : fmt(kib / 1024, 1));
const ms = (v: number | undefined): string => fmt(v, 0);
const max = (xs: (number | undefined)[]): number | undefined => {
  const d = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
  return d.length === 0 ? undefined : Math.max(...d);
};

export function propagationHeader(r: PropagationResult): string[] {
  return [
    `- service: \`node dist/main.js control --repo <temp repo> --branch main --grpc-address 127.0.0.1 --grpc-port 0 --api-address 127.0.0.1 --api-port 0 --poll-ms 3600000 --work-dir <temp>\` on CPU ${P.serverCpu}; default log level (info: a line per ACK)`,
    `- sidecars: ${r.sidecars} simulated (bench/propagation-sidecars.ts: ControlClient, one HTTP/2 connection each, heartbeat ${P.propagationHeartbeatMs} ms; apply = parsePolicy of the pushed YAML) in ${r.processes} process(es) on CPU ${P.loadCpu}; all selected by one policy (\`selector.service\`)`,
    `- each round: commit \`deadlineHeader: x-vN\`, t0, POST /v1/refresh (the webhook; the service debounces pokes 200 ms before it fetches), until every sidecar applied it and GET /v1/fleet shows all in sync (bound ${P.propagationTimeoutSeconds} s, BENCH_PROPAGATION_TIMEOUT_SECONDS)`,
  ];
}

function row(label: string, r: Pick<RoundResult, 'applyMs'> & Partial<RoundResult>, fetchMs: number | undefined, notes: string[], errors: string): string {
  const a = r.applyMs;
  const cells = [
    label,
    ms(fetchMs),
    `${a.length}`,
    fmt(percentile(a, 0.5), 0),
    fmt(percentile(a, 0.99), 0),
    fmt(a.at(-1), 0),
    ms(r.lastFromFetchMs),
    r.acks === undefined ? '—' : `${ms(r.lastAckMs)} (${r.acks})`,
    ms(r.inSyncMs),
    ms(r.serviceCpuMs),
    errors,
    notes.join('; '),
  ];
  return `| ${cells.join(' | ')} |`;
}

export function propagationTable(r: PropagationResult): string {
  const out: string[] = [
    '| round | fetched ms | sidecars applied | p50 ms | p99 ms | max ms | last apply after fetch ms | last ACK ms (ACKs) | fleet in sync ms | service CPU ms | errors | notes |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|',
  ];
  const footnotes: string[] = [];
  for (const rd of r.rounds) {
    const notes: string[] = [`service RSS after ${mib(rd.rssAfterKiB)} MiB`, `sidecars CPU ${ms(rd.sidecarsCpuMs)} ms`];
    if (rd.firstReceivedFromFetchMs !== undefined) notes.push(`first update received ${ms(rd.firstReceivedFromFetchMs)} ms after the fetch`);
    if (rd.maxApplyWorkMs !== undefined) notes.push(`slowest parse+apply ${fmt(rd.maxApplyWorkMs, 1)} ms`);
    if (rd.otherCpuPct >= NOISY_PCT) notes.push(`NOISY: other processes used ${fmt(rd.otherCpuPct, 0)}% of a core`);
    else if (rd.notQuiet) notes.push('machine was busy as the round started');
    if (rd.error !== undefined) footnotes.push(`**${PROPAGATION_TITLE}, round ${rd.round} failed:**\n\n\`\`\`\n${rd.error.slice(0, 3000)}\n\`\`\``);
    out.push(row(`${rd.round} (${rd.header})`, rd, rd.fetchMs, rd.error === undefined ? notes : [], rd.error === undefined ? '0' : 'FAILED, see below'));
  }
  const done = r.rounds.filter((rd) => rd.error === undefined);
  if (done.length > 0) {
    const all = done.flatMap((rd) => rd.applyMs).sort((a, b) => a - b);
    out.push(
      row(
        `**all ${done.length} rounds**`,
        {
          applyMs: all,
          lastFromFetchMs: max(done.map((rd) => rd.lastFromFetchMs)),
          acks: done.reduce((s, rd) => s + rd.acks, 0),
          lastAckMs: max(done.map((rd) => rd.lastAckMs)),
          inSyncMs: max(done.map((rd) => rd.inSyncMs)),
          serviceCpuMs: done.reduce((s, rd) => s + rd.serviceCpuMs, 0),
        },
        max(done.map((rd) => rd.fetchMs)),
        [`percentiles over all ${all.length} applies; other columns: the worst round, CPU summed`],
        '0',
      ),
    );
  }
  if (r.error !== undefined) footnotes.push(`**${PROPAGATION_TITLE} failed:**\n\n\`\`\`\n${r.error.slice(0, 3000)}\n\`\`\``);

  const summary: string[] = [];
  const worst = max(done.map((rd) => rd.lastFromFetchMs));
  if (done.length > 0 && done.length === r.rounds.length && r.error === undefined && worst !== undefined) {
    const worstRound = done.find((rd) => rd.lastFromFetchMs === worst)?.round;
    summary.push(
      `**Goal** (every sidecar applied within ${GOAL_MS} ms of the commit being fetched): ${worst <= GOAL_MS ? 'met' : '**NOT met**'}, the last sidecar ${ms(worst)} ms after the fetch at worst (round ${worstRound}).`,
    );
  } else {
    summary.push('**Goal**: not assessed, a round failed or the fetch was not seen in the service log.');
  }
  summary.push(
    `**Service memory**: peak RSS (VmHWM, over its life, start-up and the first push to ${r.sidecars} sidecars included) ${mib(r.peakRssKiB)} MiB; RSS with ${r.sidecars} streams before the rounds ${mib(r.rssBeforeKiB)} MiB, after them ${mib(r.rssAfterKiB)} MiB. Start-up (sidecars started until all in sync on the first commit): ${fmt(r.startupSeconds, 1)} s.`,
  );
  return [`### ${PROPAGATION_TITLE}`, propagationHeader(r).join('\n'), out.join('\n'), summary.join('\n\n'), ...footnotes].join('\n\n');
}
