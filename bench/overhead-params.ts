// Parameters of the overhead benchmark (bench/run.ts), from the environment; bench/README.md
// lists them. Read once at start-up, shared by the HTTP/1.1, the HTTP/2 / gRPC and the
// propagation scenarios.
import { envList, envNice, envNum, sluiceNodeFlags } from './lib/procs.ts';

export const P = {
  satSeconds: envNum('BENCH_SECONDS', 5),
  warmupSeconds: envNum('BENCH_WARMUP_SECONDS', 3),
  connections: envNum('BENCH_CONNECTIONS', 64),
  rate: envNum('BENCH_RATE', 2000),
  fixedSeconds: envNum('BENCH_FIXED_SECONDS', 5),
  fixedWarmupSeconds: envNum('BENCH_FIXED_WARMUP_SECONDS', 1),
  loadCpu: process.env['BENCH_LOAD_CPU'] ?? '0',
  serverCpu: process.env['BENCH_SERVER_CPU'] ?? '1',
  /** Comma-separated row ids or groups to run (each table's direct row runs with any of its rows). */
  rows: envList('BENCH_ROWS'),
  keepTmp: process.env['BENCH_KEEP_TMP'] === '1',
  /** Scheduling niceness for all bench processes (negative needs root): less noise from others. */
  nice: envNice(),
  /** Before each row, wait up to this long for the bench CPUs to go idle (other people's work). */
  quietWaitSeconds: process.env['BENCH_QUIET_WAIT_SECONDS'] === '0' ? 0 : envNum('BENCH_QUIET_WAIT_SECONDS', 10),
  /** Extra node flags for the sidecar processes (BENCH_SLUICE_NODE_FLAGS). */
  sluiceNodeFlags: sluiceNodeFlags(),

  // HTTP/2 and gRPC. In flight at once: clients × streams for h2load, concurrency for gRPC
  // unary, 64 by default like the HTTP/1.1 rows' connections.
  /** h2load -c: connections. */
  h2Clients: envNum('BENCH_H2_CLIENTS', 4),
  /** h2load -m: streams in flight per connection. */
  h2Streams: envNum('BENCH_H2_STREAMS', 16),
  /** grpc-js channels (one connection each) the gRPC generator spreads its calls over. */
  grpcChannels: envNum('BENCH_GRPC_CHANNELS', 4),
  /** Unary calls in flight. */
  grpcConcurrency: envNum('BENCH_GRPC_CONCURRENCY', 64),
  /** Server-streaming calls in flight, each asking for the messages below. */
  grpcStreamConcurrency: envNum('BENCH_GRPC_STREAM_CONCURRENCY', 16),
  grpcStreamMessages: envNum('BENCH_GRPC_STREAM_MESSAGES', 100),
  grpcMessageBytes: envNum('BENCH_GRPC_MESSAGE_BYTES', 4096),

  // Config propagation (bench/propagation.ts): simulated sidecars on one config service.
  /** Sidecars connected to the service, all selected by the same policy. */
  propagationSidecars: envNum('BENCH_PROPAGATION_SIDECARS', 200),
  /** Commits pushed, one after the other, each measured until the whole fleet runs it. */
  propagationRounds: envNum('BENCH_PROPAGATION_ROUNDS', 5),
  /** Processes the simulated sidecars are spread over (all on the load core). */
  propagationProcesses: envNum('BENCH_PROPAGATION_PROCESSES', 1),
  /** Bound on every wait of the scenario (start-up, each round), seconds. */
  propagationTimeoutSeconds: envNum('BENCH_PROPAGATION_TIMEOUT_SECONDS', 30),
  /** Heartbeat interval of the simulated sidecars (sluice proxy's is 5000 ms). */
  propagationHeartbeatMs: envNum('BENCH_PROPAGATION_HEARTBEAT_MS', 5000),
};
