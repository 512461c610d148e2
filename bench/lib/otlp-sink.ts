// A stand-in OTLP/HTTP collector for the tracing rows: accepts trace exports, answers 200 with
// an empty ExportTraceServiceResponse, and counts what arrived. It runs in the bench runner, so
// its work is not charged to the sidecar under test; what the sidecar pays is building,
// batching, encoding and sending its spans, as it would to a real collector.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface OtlpSink {
  readonly url: string;
  readonly exports: number;
  readonly bytes: number;
}

let sink: Promise<OtlpSink> | undefined;
let started: OtlpSink | undefined;

/** One sink for the whole run, started on first use; it never keeps the runner alive. */
export function otlpSink(): Promise<OtlpSink> {
  sink ??= new Promise((resolve, reject) => {
    const counts = { exports: 0, bytes: 0 };
    const server = http.createServer((req, res) => {
      req.on('data', (c: Buffer) => (counts.bytes += c.length));
      req.on('end', () => {
        if (req.method === 'POST' && req.url === '/v1/traces') counts.exports++;
        res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': 0 });
        res.end();
      });
    });
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.unref();
      const port = (server.address() as AddressInfo).port;
      started = {
        url: `http://127.0.0.1:${port}/v1/traces`,
        get exports() {
          return counts.exports;
        },
        get bytes() {
          return counts.bytes;
        },
      };
      resolve(started);
    });
  });
  return sink;
}

/** What the sink received this run, for the table's notes; undefined when no row used it. */
export function sinkSummary(): string | undefined {
  if (started === undefined) return undefined;
  return `${started.exports} OTLP exports, ${(started.bytes / 1e6).toFixed(1)} MB`;
}
