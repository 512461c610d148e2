// Overhead benchmark: one run, one markdown table per protocol. See bench/README.md.
//
//   node bench/run.ts          (npm run bench)
//
// Scenarios: HTTP/1.1 (wrk), HTTP/2 h2c (h2load), gRPC unary and gRPC server streaming
// (grpc-js). Rows of each: direct (load -> upstream), sluice outbound, sluice outbound ->
// inbound (two sidecars), nginx and haproxy when installed. The load generator runs on one core,
// the upstream and the proxy under test on the other. Then config propagation
// (./propagation.ts): a commit to simulated sidecars through `sluice control`, one table of
// rounds. Everything started here is stopped by PID at the end, also on error or Ctrl-C.
import path from 'node:path';
import type { BenchOutcome } from './lib/procs.ts';
import { NODE, Proc, ROOT, checkNice, checkPlatform, freePort, isAborting, makeTmpDir, onPath, pinSelf, pinned, runMain, waitFor } from './lib/procs.ts';
import { HTTP1 } from './overhead-http1.ts';
import { GRPC_STREAM, GRPC_UNARY, H2 } from './overhead-h2.ts';
import { P } from './overhead-params.ts';
import { header, table } from './overhead-report.ts';
import { PROPAGATION_TITLE, propagationTable } from './propagation-report.ts';
import type { PropagationResult } from './propagation.ts';
import { propagationSkip, runPropagation } from './propagation.ts';
import type { RowResult, Scenario } from './overhead-rows.ts';
import { runRow, selected } from './overhead-rows.ts';

const SCENARIOS: readonly Scenario[] = [HTTP1, H2, GRPC_UNARY, GRPC_STREAM];
/** BENCH_ROWS name of the propagation table (it has no rows of its own to pick). */
const PROPAGATION = 'propagation';

/** The load tool a scenario needs that is not installed, as a skip reason. */
function toolMissing(sc: Scenario): string | undefined {
  if (sc === HTTP1 && onPath('wrk') === undefined) return 'wrk is not on PATH (apt-get install wrk)';
  if (sc === H2 && onPath('h2load') === undefined) return 'h2load is not on PATH (apt-get install nghttp2-client)';
  return undefined;
}

/** BENCH_ROWS names: each scenario's groups and its prefixed row ids. A typo fails the run. */
function checkRowNames(): void {
  const known = new Set([...SCENARIOS.flatMap((sc) => [...sc.groups, ...sc.targets.map((t) => sc.rowPrefix + t.id)]), PROPAGATION]);
  const unknown = P.rows.filter((r) => !known.has(r));
  if (unknown.length > 0) throw new Error(`BENCH_ROWS: unknown ${unknown.join(', ')}; known: ${[...known].join(', ')}`);
}

async function startServer(sc: Scenario): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const [cmd, args] = pinned(P.serverCpu, NODE, [path.join(ROOT, 'bench', sc.server.script), String(port)], P.nice);
  const proc = new Proc(sc.server.name, cmd, args);
  await waitFor(sc.server.name, [proc], async () => /listening \d+/.test(proc.stdout), 10_000);
  return { proc, port };
}

async function main(): Promise<BenchOutcome> {
  checkPlatform([P.loadCpu, P.serverCpu]);
  checkRowNames();
  // This process coordinates and samples; keep it off the server core.
  pinSelf(P.loadCpu);
  checkNice(P.nice);

  // A table runs when any of its rows is selected, and then always with its direct row: every
  // ratio in it divides by that.
  const plan = SCENARIOS.map((sc) => ({ sc, targets: sc.targets.filter((t) => selected(sc, t)) }))
    .filter((p) => p.targets.length > 0)
    .map(({ sc, targets }) => ({ sc, targets: sc.targets.filter((t) => t.id === 'direct' || targets.includes(t)) }));

  const tmp = makeTmpDir('sluice-bench-', P.keepTmp);
  const sections: { sc: Scenario; results?: RowResult[]; skipped?: string }[] = [];
  for (const { sc, targets } of plan) {
    const missing = toolMissing(sc);
    if (missing !== undefined) {
      // Asked for by name: an error. Part of the default run: skipped, and the report says so.
      if (P.rows.length > 0) throw new Error(`${sc.title}: ${missing}`);
      process.stderr.write(`[bench] ${sc.title}: skipped: ${missing}\n`);
      sections.push({ sc, skipped: missing });
      continue;
    }
    const server = await startServer(sc);
    const results: RowResult[] = [];
    for (const spec of targets) {
      if (isAborting()) throw new Error('interrupted');
      results.push(await runRow(sc, spec, tmp, server.proc, server.port));
      if (!server.proc.alive) throw new Error(`${sc.server.name} died\n${server.proc.describe()}`);
    }
    await server.proc.stop();
    sections.push({ sc, results });
  }
  let propagation: { result?: PropagationResult; skipped?: string } | undefined;
  if (P.rows.length === 0 || P.rows.includes(PROPAGATION)) {
    if (isAborting()) throw new Error('interrupted');
    const missing = propagationSkip();
    if (missing !== undefined && P.rows.length > 0) throw new Error(`${PROPAGATION_TITLE}: ${missing}`);
    if (missing !== undefined) process.stderr.write(`[bench] ${PROPAGATION_TITLE}: skipped: ${missing}\n`);
    propagation = missing === undefined ? { result: await runPropagation(tmp) } : { skipped: missing };
  }
  // The report (git, tool versions) is written after runMain has stopped everything.
  const report = (): string =>
    [
      header(sections.filter((s) => s.results !== undefined).map((s) => s.sc)),
      ...sections.map((s) => (s.results === undefined ? `### ${s.sc.title}\n\nskipped: ${s.skipped ?? ''}` : table(s.sc, s.results))),
      ...(propagation === undefined ? [] : [propagation.result === undefined ? `### ${PROPAGATION_TITLE}\n\nskipped: ${propagation.skipped ?? ''}` : propagationTable(propagation.result)]),
    ].join('\n\n');
  const propagationFailed = propagation?.result !== undefined && (propagation.result.error !== undefined || propagation.result.rounds.some((r) => r.error !== undefined));
  return { report, failed: propagationFailed || sections.some((s) => s.results?.some((r) => r.error !== undefined)) };
}

runMain('bench', main);
