// The git CLI as the git follower needs it: a bare mirror that fetches one branch and reads blobs
// from it. Every command runs without a shell (arguments are never parsed by anything but git),
// with no prompt that could wait for a human, under a deadline and an output bound; on either,
// the whole process tree is killed, not only git, because the transport (ssh, git-remote-https,
// upload-pack) is a child of git and would otherwise hold the pipes open past the deadline.
// spawn (shell: false, as execFile uses it) rather than execFile: execFile cannot start the child
// in its own process group, which is what makes one kill reach the whole tree.
import { spawn } from 'node:child_process';

/** missing: no git binary. too-large: stdout passed its bound. aborted: the owner closed. */
export type GitFailureKind = 'missing' | 'timeout' | 'failed' | 'too-large' | 'aborted';

export class GitCommandError extends Error {
  readonly kind: GitFailureKind;
  /** Exit code for `failed`; null when killed or never started. */
  readonly exitCode: number | null;
  /** What git wrote to stderr (its head, bounded), for classifying `failed`. */
  readonly stderr: string;
  constructor(kind: GitFailureKind, message: string, details: { exitCode?: number | null; stderr?: string; cause?: unknown } = {}) {
    super(message, { cause: details.cause });
    this.name = 'GitCommandError';
    this.kind = kind;
    this.exitCode = details.exitCode ?? null;
    this.stderr = details.stderr ?? '';
  }
}

export interface GitRunOptions {
  /** Killed (SIGTERM, then SIGKILL) after this long. */
  readonly timeoutMs: number;
  /** More stdout than this kills the command: the caller's bound, not a buffer size. */
  readonly maxStdoutBytes: number;
  /** Written to stdin, which is closed after it; without it stdin is /dev/null. */
  readonly input?: string;
  /** Aborting kills the command (GitCommandError 'aborted'). */
  readonly signal?: AbortSignal;
  /** The git binary; default `git` on the PATH. */
  readonly git?: string;
  /** `-c name=value` settings for this command. */
  readonly config?: readonly string[];
  /** The repository (`--git-dir`), so git never searches for one from the cwd. */
  readonly gitDir?: string;
}

/** Enough of stderr to say what went wrong; git's messages are a few lines. */
const MAX_STDERR_BYTES = 16 * 1024;
/** SIGTERM lets git remove its lock files (a SIGKILLed fetch leaves refs/…/x.lock behind). */
const KILL_GRACE_MS = 1000;
/** After git exited, how long a stray grandchild may hold the pipes before we stop reading. */
const PIPE_GRACE_MS = 200;

/** The longest a command given `timeoutMs` can run: its deadline, then the time to kill it. */
export function longestRunMs(timeoutMs: number): number {
  return timeoutMs + KILL_GRACE_MS + PIPE_GRACE_MS;
}

/**
 * GIT_TERMINAL_PROMPT=0: a credential git lacks is an error, never a prompt that hangs the fetch.
 * LC_ALL=C: stderr in English, which is what errors are classified on. GIT_LITERAL_PATHSPECS: a
 * subdir such as `:(glob)x` or `*` is a path, not pathspec magic.
 */
function gitEnv(): NodeJS.ProcessEnv {
  return { ...process.env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C', LANGUAGE: 'C', GIT_LITERAL_PATHSPECS: '1' };
}

/** Runs `git <command> args…` and resolves with its stdout; any failure is a GitCommandError. */
export function runGit(args: readonly string[], options: GitRunOptions): Promise<Buffer> {
  const git = options.git ?? 'git';
  const what = `git ${args[0] ?? ''}`.trim();
  const argv = [
    ...(options.config ?? []).flatMap((c) => ['-c', c]),
    ...(options.gitDir === undefined ? [] : [`--git-dir=${options.gitDir}`]),
    ...args,
  ];
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(new GitCommandError('aborted', `${what} not started: closed`));
  return new Promise<Buffer>((resolve, reject) => {
    // Its own process group (POSIX), so one kill reaches git's transport children too.
    const group = process.platform !== 'win32';
    const child = spawn(git, argv, {
      env: gitEnv(),
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      detached: group,
      windowsHide: true,
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let stderr = '';
    let failure: GitCommandError | undefined;
    let settled = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const timers: NodeJS.Timeout[] = [];

    const killTree = (sig: NodeJS.Signals): void => {
      try {
        if (group && child.pid !== undefined) process.kill(-child.pid, sig);
        else child.kill(sig);
      } catch {
        // Already gone.
      }
    };
    const stop = (why: GitCommandError): void => {
      if (failure || exit) return;
      failure = why;
      killTree('SIGTERM');
      timers.push(setTimeout(() => killTree('SIGKILL'), KILL_GRACE_MS));
    };
    const finish = (): void => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      signal?.removeEventListener('abort', onAbort);
      child.stdout?.destroy();
      child.stderr?.destroy();
      if (failure) return reject(failure);
      if (exit?.code === 0) return resolve(Buffer.concat(out, outBytes));
      const how = exit?.code != null ? `exited with ${exit.code}` : `was killed by ${exit?.signal ?? 'a signal'}`;
      reject(new GitCommandError('failed', `${what} ${how}: ${gitMessage(stderr)}`, { exitCode: exit?.code ?? null, stderr }));
    };
    const onAbort = (): void => stop(new GitCommandError('aborted', `${what} stopped: closed`));

    timers.push(setTimeout(() => stop(new GitCommandError('timeout', `${what} timed out after ${options.timeoutMs} ms`)), options.timeoutMs));
    signal?.addEventListener('abort', onAbort, { once: true });

    child.stdout!.on('data', (chunk: Buffer) => {
      if (failure) return;
      outBytes += chunk.length;
      if (outBytes > options.maxStdoutBytes) {
        stop(new GitCommandError('too-large', `${what} wrote more than ${options.maxStdoutBytes} bytes`));
        return;
      }
      out.push(chunk);
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      if (stderr.length < MAX_STDERR_BYTES) stderr += chunk.toString('utf8').slice(0, MAX_STDERR_BYTES - stderr.length);
    });
    child.once('error', (err: NodeJS.ErrnoException) => {
      // Only spawn failures land here (no cwd is given, so ENOENT is the binary).
      if (!failure && err.code === 'ENOENT') {
        failure = new GitCommandError('missing', `git not found (${git}): install git or put it on the PATH`, { cause: err });
      } else if (!failure) {
        failure = new GitCommandError('failed', `${what} could not start: ${err.message}`, { cause: err });
      }
      finish();
    });
    child.once('exit', (code, sig) => {
      exit = { code, signal: sig };
      // A grandchild still holding the pipes (git exited, its transport did not) is ended with it.
      timers.push(
        setTimeout(() => {
          if (!settled) killTree('SIGKILL');
          finish();
        }, PIPE_GRACE_MS),
      );
    });
    child.once('close', finish);
    if (options.input !== undefined && child.stdin) {
      // git may exit before reading all of it (a bad object id); its exit code says why, not EPIPE.
      child.stdin.on('error', () => {});
      child.stdin.end(options.input);
    }
  });
}

/** The line of git's stderr that says why (`fatal: …`), or its first line. */
export function gitMessage(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const line = lines.find((l) => /^(fatal|error):/.test(l)) ?? lines[0] ?? '(no message)';
  return line.length > 500 ? `${line.slice(0, 500)}…` : line;
}

export interface TreeEntry {
  /** 100644, 100755, 120000 (symlink), 160000 (submodule)… */
  readonly mode: string;
  /** blob, tree or commit. */
  readonly type: string;
  readonly oid: string;
  /** Repo-relative, '/'-separated, as stored in the tree. */
  readonly path: string;
}

/** `git ls-tree -z` output: `<mode> SP <type> SP <oid> TAB <path> NUL`. */
export function parseLsTree(out: Buffer): TreeEntry[] {
  const entries: TreeEntry[] = [];
  for (const record of out.toString('utf8').split('\0')) {
    if (record === '') continue;
    const tab = record.indexOf('\t');
    const [mode, type, oid] = record.slice(0, tab).split(' ');
    if (tab < 0 || mode === undefined || type === undefined || oid === undefined) {
      throw new Error(`unexpected git ls-tree line: ${JSON.stringify(record.slice(0, 200))}`);
    }
    entries.push({ mode, type, oid, path: record.slice(tab + 1) });
  }
  return entries;
}

/** `git cat-file --batch-check` output, one line per object asked for, in order. */
export function parseBatchCheck(out: string, oids: readonly string[]): number[] {
  const lines = out.split('\n');
  return oids.map((oid, i) => {
    const [got, type, size] = (lines[i] ?? '').split(' ');
    if (got !== oid || type !== 'blob' || size === undefined || !/^\d+$/.test(size)) {
      throw new Error(`git cat-file --batch-check answered ${JSON.stringify(lines[i] ?? '')} for blob ${oid}`);
    }
    return Number(size);
  });
}

/** `git cat-file --batch` output: per object `<oid> blob <size> LF <content> LF`, in order. */
export function parseBatch(out: Buffer, oids: readonly string[]): Buffer[] {
  const blobs: Buffer[] = [];
  let at = 0;
  for (const oid of oids) {
    const eol = out.indexOf(0x0a, at);
    const [got, type, size] = (eol < 0 ? '' : out.toString('utf8', at, eol)).split(' ');
    const n = Number(size);
    if (got !== oid || type !== 'blob' || !Number.isSafeInteger(n) || eol + 1 + n > out.length) {
      throw new Error(`git cat-file --batch gave no content for blob ${oid}`);
    }
    blobs.push(out.subarray(eol + 1, eol + 1 + n));
    at = eol + 1 + n + 1;
  }
  return blobs;
}

// What reaches git's command line from configuration, checked so that none of it is an option.

/**
 * Why a branch name would be refused by `git check-ref-format refs/heads/<name>` (the rules of
 * its manual page), or starts with '-' and could be read as an option; undefined when it is fine.
 * Checked here and not by running git, so a bad name fails the constructor, at once.
 */
export function branchProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name === '') return 'must be a non-empty string';
  if (name.length > 255) return 'is longer than 255 characters';
  if (name.startsWith('-')) return "starts with '-'";
  if (name === 'HEAD' || name === '@') return 'is not a branch name';
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(name)) return 'contains a space, a control character or one of ~ ^ : ? * [ \\';
  if (name.includes('..')) return "contains '..'";
  if (name.includes('@{')) return "contains '@{'";
  if (name.startsWith('/') || name.endsWith('/') || name.includes('//')) return "has an empty component (leading, trailing or double '/')";
  if (name.endsWith('.')) return "ends with '.'";
  for (const part of name.split('/')) {
    if (part.startsWith('.')) return "has a component starting with '.'";
    if (part.endsWith('.lock')) return "has a component ending with '.lock'";
  }
  return undefined;
}

/** `a/b/` → `a/b`; '' and '.' mean the whole repository (undefined); otherwise why it is refused. */
export function normalSubdir(subdir: unknown): string | undefined | { problem: string } {
  if (typeof subdir !== 'string') return { problem: 'must be a string' };
  const s = subdir.replace(/\/+$/, '');
  if (s === '' || s === '.') return undefined;
  if (s.length > 4096) return { problem: 'is longer than 4096 characters' };
  if (s.startsWith('/')) return { problem: 'must be relative to the repository root' };
  if (s.startsWith('-')) return { problem: "starts with '-'" };
  if (/[\x00-\x1f\x7f\\]/.test(s)) return { problem: "contains a control character or '\\' (use '/')" };
  for (const part of s.split('/')) {
    if (part === '') return { problem: "has an empty component ('//')" };
    if (part === '..' || part === '.') return { problem: "has a '.' or '..' component" };
    if (part.startsWith('.')) return { problem: "has a component starting with '.' (hidden paths are never policy files)" };
  }
  return s;
}

export function repoProblem(repo: unknown): string | undefined {
  if (typeof repo !== 'string' || repo === '') return 'must be a URL or a path';
  if (repo.length > 4096) return 'is longer than 4096 characters';
  if (repo.startsWith('-')) return "starts with '-'";
  if (/[\x00-\x1f\x7f]/.test(repo)) return 'contains a control character';
  return undefined;
}

/** git's own rule: a URL has `scheme://` or `helper::`; `host:path` before any '/' is scp-like ssh. */
export function isLocalPath(repo: string): boolean {
  if (/^[a-z][a-z0-9+.-]*:(\/\/|:)/i.test(repo)) return false;
  const colon = repo.indexOf(':');
  const slash = repo.indexOf('/');
  const windowsDrive = /^[a-z]:[\\/]/i.test(repo);
  return windowsDrive || colon < 0 || (slash >= 0 && slash < colon);
}

/**
 * Hides the credentials of an http(s) URL (`https://user:token@host/…`, `https://token@host/…`)
 * wherever they appear, since git echoes URLs in its errors. ssh's `git@` is a user, not a secret.
 */
export function redact(text: string, repo: string): string {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^@/]+)@/i.exec(repo);
  if (!m || !(/^https?$/i.test(m[1]!) || m[2]!.includes(':'))) return text;
  return text.split(`${m[2]}@`).join('***@');
}
