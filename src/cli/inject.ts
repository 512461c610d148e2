// `sluice inject`: add the sidecar to the workloads in Kubernetes manifests, files or stdin in,
// stdout out. Refusals (a bad annotation, a port clash) fail the whole run: half a manifest
// piped into `kubectl apply` is worse than none.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { checkControlAddress, CONTROL_ADDRESS, TOKEN_SECRET, type InjectSettings } from '../inject/annotations.ts';
import { injectStream, joinStreams } from '../inject/manifests.ts';
import { SLUICE_VERSION } from './version.ts';

export const DEFAULT_IMAGE = `ghcr.io/sluice-dev/sluice:${SLUICE_VERSION}`;

export const INJECT_HELP = `Usage: sluice inject [options] [FILE...]

Adds the sluice sidecar to the workloads in Kubernetes manifests (Pod, Deployment, StatefulSet,
DaemonSet, ReplicaSet, Job, CronJob, and those in a kind: List) and writes every document to
stdout in order; other documents, and workloads already injected, are written back unchanged.
Reads stdin when no FILE is given, or for "-".

Options:
  --image IMAGE                 sidecar image (default ${DEFAULT_IMAGE})
  --control HOST:PORT|off       config service (default ${CONTROL_ADDRESS});
                                off: sidecars run on the bundled policy
  --control-token-secret NAME   Secret (key "token") in the workload's namespace (default ${TOKEN_SECRET})
  --legacy                      a regular container instead of a native sidecar (Kubernetes < 1.29)
  -q, --quiet                   no report on stderr (warnings and errors are still printed)
  -h, --help                    this help

Annotations on a workload or its pod template override these (sluice.dev/inject: "false" opts
out; see README "Injecting the sidecar"). Exit 0 when the manifests were written, 1 when a workload
was refused or a file is not YAML (nothing is written), 2 on usage errors.`;

export interface InjectFlags {
  image?: string;
  control?: string;
  'control-token-secret'?: string;
  legacy?: boolean;
}

/** The command line's defaults for every workload; shared with `sluice webhook`. */
export function settingsFrom(values: InjectFlags): InjectSettings {
  const image = values.image ?? DEFAULT_IMAGE;
  if (image.trim() === '' || /\s/.test(image)) throw new Error(`--image: ${JSON.stringify(image)} is not an image reference`);
  const tokenSecret = values['control-token-secret'] ?? TOKEN_SECRET;
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(tokenSecret)) throw new Error(`--control-token-secret: ${JSON.stringify(tokenSecret)} is not a Secret name`);
  return { image, control: checkControlAddress('--control', values.control ?? CONTROL_ADDRESS), tokenSecret, legacy: values.legacy === true };
}

export interface InjectIo {
  readStdin(): Promise<string>;
  readonly stdinIsTty: boolean;
  out(text: string): void;
  err(line: string): void;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(chunks).toString('utf8');
}

export const processIo: InjectIo = {
  readStdin: () => readAll(process.stdin),
  stdinIsTty: process.stdin.isTTY === true,
  out: (text) => process.stdout.write(text),
  err: (line) => console.error(line),
};

export async function runInject(argv: string[], io: InjectIo = processIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        image: { type: 'string' },
        control: { type: 'string' },
        'control-token-secret': { type: 'string' },
        legacy: { type: 'boolean' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
  } catch (err) {
    io.err(`sluice inject: ${(err as Error).message}\n\n${INJECT_HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    io.out(`${INJECT_HELP}\n`);
    return 0;
  }
  let settings: InjectSettings;
  try {
    settings = settingsFrom(values);
  } catch (err) {
    io.err(`sluice inject: ${(err as Error).message}`);
    return 2;
  }
  const files = positionals.length === 0 ? ['-'] : positionals;
  if (files.includes('-') && io.stdinIsTty) {
    io.err(`sluice inject: give manifest files, or pipe them in (sluice inject < app.yaml)\n\n${INJECT_HELP}`);
    return 2;
  }

  const texts: string[] = [];
  const errors: string[] = [];
  const notes: string[] = [];
  for (const file of files) {
    let source: string;
    try {
      source = file === '-' ? await io.readStdin() : await readFile(file, 'utf8');
    } catch (err) {
      errors.push(`${file}: ${(err as Error).message}`);
      continue;
    }
    const name = file === '-' ? '(stdin)' : file;
    const r = injectStream(source, name, { settings });
    errors.push(...r.errors);
    for (const d of r.reports) {
      if (d.outcome === 'ignored') continue;
      const line = `${name}: ${d.what}: ${d.outcome === 'skipped' ? `not injected: ${d.message}` : d.message}`;
      if (d.warn) notes.push(`warning: ${line}`);
      else if (values.quiet !== true) notes.push(line);
    }
    for (const w of r.warnings) notes.push(`warning: ${name}: ${w}`);
    texts.push(r.text);
  }
  if (errors.length > 0) {
    for (const e of errors) io.err(e);
    io.err('sluice inject: nothing written');
    return 1;
  }
  for (const n of notes) io.err(n);
  io.out(joinStreams(texts));
  return 0;
}
