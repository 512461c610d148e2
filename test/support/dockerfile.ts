// Enough of a Dockerfile and .dockerignore to carry out a multi-stage build without Docker: each
// stage is a directory standing for its WORKDIR, COPY copies (from the context, filtered by
// .dockerignore, or from an earlier stage), and RUN is handed to the caller, who decides what can
// run on this machine. The test that uses it follows the Dockerfile instead of a copy of its steps.
// Only the instructions this repository's Dockerfile uses are understood; anything else throws,
// so a new instruction makes the test fail instead of being skipped without a word.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';

export interface Instruction {
  /** Upper case: FROM, RUN, COPY... */
  readonly keyword: string;
  /** Everything after the keyword, continuation lines joined, ARGs not yet substituted. */
  readonly args: string;
  /** 1-based line of the keyword, for messages. */
  readonly line: number;
}

export interface Stage {
  /** The FROM image, with global ARG defaults substituted. */
  readonly base: string;
  readonly name: string | undefined;
  readonly instructions: readonly Instruction[];
}

export interface Dockerfile {
  /** ARGs declared before the first FROM, with their defaults. */
  readonly globalArgs: Readonly<Record<string, string>>;
  readonly stages: readonly Stage[];
}

const KNOWN = new Set(['FROM', 'ARG', 'WORKDIR', 'COPY', 'RUN', 'ENV', 'USER', 'EXPOSE', 'HEALTHCHECK', 'ENTRYPOINT', 'CMD', 'LABEL']);

/** `${X}` and `$X` replaced by `vars`; an unknown name is left as it is. */
export function substitute(text: string, vars: Readonly<Record<string, string>>): string {
  return text.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, a: string | undefined, b: string | undefined) => vars[(a ?? b)!] ?? whole);
}

export function parseDockerfile(text: string): Dockerfile {
  const instructions: Instruction[] = [];
  let pending: { keyword: string; parts: string[]; line: number } | undefined;
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trimEnd();
    // Comment and empty lines are dropped, also inside a continued instruction (as Docker does).
    if (/^\s*#/.test(line) || line.trim() === '') return;
    const continued = line.endsWith('\\');
    const body = continued ? line.slice(0, -1) : line;
    if (pending === undefined) {
      const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(body);
      if (!m) throw new Error(`Dockerfile:${i + 1}: cannot read ${JSON.stringify(line)}`);
      const keyword = m[1]!.toUpperCase();
      if (!KNOWN.has(keyword)) throw new Error(`Dockerfile:${i + 1}: ${keyword} is not an instruction this parser knows; teach test/support/dockerfile.ts`);
      pending = { keyword, parts: [m[2]!], line: i + 1 };
    } else {
      pending.parts.push(body.trim());
    }
    if (!continued) {
      instructions.push({ keyword: pending.keyword, args: pending.parts.join(' ').trim(), line: pending.line });
      pending = undefined;
    }
  });
  if (pending !== undefined) throw new Error(`Dockerfile:${pending.line}: continued past the end of the file`);

  const globalArgs: Record<string, string> = {};
  const stages: { base: string; name: string | undefined; instructions: Instruction[] }[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`Dockerfile:${ins.line}: cannot read FROM ${ins.args}`);
      stages.push({ base: substitute(m[1]!, globalArgs), name: m[2], instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword !== 'ARG') throw new Error(`Dockerfile:${ins.line}: only ARG may come before the first FROM`);
      const [name, value] = splitArg(ins.args);
      globalArgs[name] = value ?? '';
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  if (stages.length === 0) throw new Error('Dockerfile: no FROM');
  return { globalArgs, stages };
}

function splitArg(args: string): [string, string | undefined] {
  const eq = args.indexOf('=');
  return eq < 0 ? [args.trim(), undefined] : [args.slice(0, eq).trim(), args.slice(eq + 1).trim()];
}

/** The ARG defaults a stage declares (ARG NAME=default). */
export function stageArgs(stage: Stage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const ins of stage.instructions.filter((i) => i.keyword === 'ARG')) {
    const [name, value] = splitArg(ins.args);
    out[name] = value ?? '';
  }
  return out;
}

/** Words of an instruction, double quotes removed: enough for COPY, LABEL and ENV as written here. */
function words(args: string): string[] {
  return [...args.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!));
}

export interface Copy {
  /** A stage name, or undefined for the build context. */
  readonly from: string | undefined;
  readonly sources: readonly string[];
  readonly dest: string;
  readonly line: number;
}

export function parseCopy(ins: Instruction): Copy {
  if (ins.args.startsWith('[')) throw new Error(`Dockerfile:${ins.line}: COPY in JSON form is not supported here`);
  const w = words(ins.args);
  let from: string | undefined;
  while (w[0]?.startsWith('--')) {
    const flag = w.shift()!;
    if (flag.startsWith('--from=')) from = flag.slice('--from='.length);
    else throw new Error(`Dockerfile:${ins.line}: COPY ${flag} is not supported here`);
  }
  if (w.length < 2) throw new Error(`Dockerfile:${ins.line}: COPY needs a source and a destination`);
  return { from, sources: w.slice(0, -1), dest: w.at(-1)!, line: ins.line };
}

/** `KEY="value" KEY2=value2` (LABEL, and ENV in its key=value form). */
export function parsePairs(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of args.matchAll(/([\w.-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))/g)) out[m[1]!] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!;
  return out;
}

/** The exec (JSON) form of ENTRYPOINT, CMD or HEALTHCHECK's CMD; the shell form is refused. */
export function execForm(args: string, line: number): string[] {
  const parsed: unknown = JSON.parse(args.startsWith('[') ? args : 'null');
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) {
    throw new Error(`Dockerfile:${line}: ${args} is not the exec form ["cmd", "arg"...]; the shell form would put sh in front of node`);
  }
  return parsed;
}

/** RUN's command, its --mount and --network flags removed, split at `&&` into the commands it chains. */
export function runCommands(ins: Instruction): string[] {
  const command = ins.args.replace(/^(?:--(?:mount|network|security)=\S+\s+)*/, '');
  return command.split('&&').map((c) => c.trim()).filter((c) => c !== '');
}

/** A .dockerignore as a predicate on context-relative paths: true = left out of the context. */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = posix.normalize((negate ? l.slice(1) : l).trim()).replace(/^\/+|\/+$/g, '');
      const source = pattern
        .split('/')
        .map((part) => (part === '**' ? '.*' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/')
        .replace(/\.\*\//g, '(?:.*/)?');
      return { negate, re: new RegExp(`^${source}$`) };
    });
  return (path) => {
    // A pattern that matches a folder covers everything under it; the last matching rule wins.
    const parts = path.split('/');
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const rule of rules) if (prefixes.some((p) => rule.re.test(p))) excluded = !rule.negate;
    return excluded;
  };
}

export interface BuildOptions {
  /** The build context (the repository root). */
  readonly context: string;
  /** Where each stage's directory is made: `<out>/<stage name or index>`. */
  readonly out: string;
  /** Runs one command of a RUN instruction in `cwd` (the stage's WORKDIR). */
  readonly run: (command: string, cwd: string, stage: Stage) => Promise<void>;
  /** Stages whose RUN instructions are not run (the final one installs system packages). */
  readonly skipRunIn?: (stage: Stage, index: number) => boolean;
}

export interface BuiltStage {
  readonly stage: Stage;
  /** The directory standing for the stage's WORKDIR. */
  readonly dir: string;
  readonly workdir: string;
}

/** Carries out every stage in order; returns their directories, the final stage last. */
export async function buildStages(df: Dockerfile, opts: BuildOptions): Promise<BuiltStage[]> {
  const ignoreFile = join(opts.context, '.dockerignore');
  const ignored = dockerignore(existsSync(ignoreFile) ? readFileSync(ignoreFile, 'utf8') : '');
  const built: BuiltStage[] = [];
  for (const [index, stage] of df.stages.entries()) {
    const dir = join(opts.out, stage.name ?? `stage-${index}`);
    mkdirSync(dir, { recursive: true });
    let workdir: string | undefined;
    for (const ins of stage.instructions) {
      if (ins.keyword === 'WORKDIR') {
        if (workdir !== undefined) throw new Error(`Dockerfile:${ins.line}: one WORKDIR per stage is all this builder maps`);
        workdir = posix.normalize(ins.args);
      } else if (ins.keyword === 'COPY') {
        if (workdir === undefined) throw new Error(`Dockerfile:${ins.line}: COPY before WORKDIR`);
        const copy = parseCopy(ins);
        const into = inside(workdir, copy.dest, ins.line);
        for (const source of copy.sources) {
          const from = copy.from === undefined ? contextPath(opts.context, source, ignored, ins.line) : stagePath(built, copy.from, source, ins.line);
          const isDir = statSync(from).isDirectory();
          // Docker: a folder's contents go into dest; a file goes into dest/ when dest ends with / or there are several sources.
          const target = !isDir && (copy.dest.endsWith('/') || copy.sources.length > 1) ? join(dir, into, basename(source)) : join(dir, into);
          mkdirSync(isDir ? target : dirname(target), { recursive: true });
          const base = copy.from === undefined ? opts.context : undefined;
          cpSync(from, target, {
            recursive: true,
            verbatimSymlinks: true,
            filter: (p) => base === undefined || !ignored(posix.relative(base, p) || '.'),
          });
        }
      } else if (ins.keyword === 'RUN') {
        if (opts.skipRunIn?.(stage, index) === true) continue;
        if (workdir === undefined) throw new Error(`Dockerfile:${ins.line}: RUN before WORKDIR`);
        for (const command of runCommands(ins)) await opts.run(command, join(dir, inside(workdir, '.', ins.line)), stage);
      }
    }
    built.push({ stage, dir, workdir: workdir ?? '/' });
  }
  return built;
}

/** A path relative to WORKDIR (or absolute under it), as a path relative to the stage's directory. */
function inside(workdir: string, path: string, line: number): string {
  const abs = posix.resolve(workdir, path);
  const rel = posix.relative(workdir, abs);
  if (rel.startsWith('..')) throw new Error(`Dockerfile:${line}: ${path} is outside WORKDIR ${workdir}; this builder maps only the WORKDIR`);
  return rel;
}

function contextPath(context: string, source: string, ignored: (p: string) => boolean, line: number): string {
  const rel = posix.normalize(source).replace(/^\/+|\/+$/g, '');
  if (rel.startsWith('..')) throw new Error(`Dockerfile:${line}: ${source} is outside the build context`);
  // A source the .dockerignore leaves out is not in the context: COPY fails, as docker build would.
  if (ignored(rel) && !hasIncludedFile(context, rel, ignored)) throw new Error(`Dockerfile:${line}: COPY ${source}: not in the build context (.dockerignore)`);
  const path = join(context, rel);
  if (!existsSync(path)) throw new Error(`Dockerfile:${line}: COPY ${source}: no such file in the build context`);
  return path;
}

function hasIncludedFile(context: string, rel: string, ignored: (p: string) => boolean): boolean {
  const path = join(context, rel);
  if (!existsSync(path) || !statSync(path).isDirectory()) return false;
  return readdirSync(path).some((name) => !ignored(`${rel}/${name}`) || hasIncludedFile(context, `${rel}/${name}`, ignored));
}

function stagePath(built: readonly BuiltStage[], name: string, source: string, line: number): string {
  const from = built.find((b) => b.stage.name === name);
  if (!from) throw new Error(`Dockerfile:${line}: COPY --from=${name}: no earlier stage of that name`);
  const path = join(from.dir, inside(from.workdir, source, line));
  if (!existsSync(path)) throw new Error(`Dockerfile:${line}: COPY --from=${name} ${source}: the stage has no such file`);
  return path;
}
