// Follows one branch of a git repository of policy files for the config service: a bare mirror in
// a directory the follower owns, fetched on an interval and when a webhook pokes it, and a
// snapshot of the policy files for every new commit. A failure never replaces what was last good:
// it is reported, the last snapshot stays the head, and the next successful fetch clears it.
//
// One fetch at a time (a second `git fetch` into the same mirror would fight over its ref locks);
// requests made while one runs are served by one more fetch after it, never dropped.
import { mkdir, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { MAX_POLICY_BYTES } from '../policy/load.ts';
import {
  branchProblem,
  GitCommandError,
  isLocalPath,
  longestRunMs,
  normalSubdir,
  parseBatch,
  parseBatchCheck,
  parseLsTree,
  redact,
  repoProblem,
  runGit,
  type GitRunOptions,
} from './git-cli.ts';

export interface PolicyFile {
  /** Repo-relative, '/'-separated. */
  readonly path: string;
  readonly text: string;
}

export interface RepoSnapshot {
  /** 40-hex SHA. */
  readonly commit: string;
  /** Sorted by path. */
  readonly files: readonly PolicyFile[];
}

export interface GitFollowerOptions {
  /** A URL git understands (https://, ssh, file://) or a local path (resolved against the cwd). */
  readonly repo: string;
  readonly branch: string;
  /** A directory the follower owns for its bare mirror (created if missing; kept across restarts). */
  readonly workDir: string;
  /** Poll interval, ms, counted from the end of the previous fetch. */
  readonly intervalMs: number;
  /** Pokes within this window (ms, from the first) coalesce into one fetch. */
  readonly debounceMs: number;
  /** Bound on each git command, ms (killed after it). */
  readonly timeoutMs: number;
  /** Only policy files under this repo-relative directory. */
  readonly subdir?: string;
  readonly log: Logger;
}

export interface GitFollowerEvents {
  /** A new commit on the branch (called once per commit change, also for the first one). */
  snapshot(s: RepoSnapshot): void;
  /** A fetch or read failed (repo gone, branch missing, git timed out, file too large...). The last snapshot stays. */
  error(err: GitFollowError): void;
}

export type GitFollowErrorCode = 'fetch-failed' | 'branch-missing' | 'timeout' | 'too-large' | 'read-failed';

export class GitFollowError extends Error {
  readonly code: GitFollowErrorCode;
  /** The commit being read when reading failed; undefined for fetch failures. */
  readonly commit?: string;
  constructor(code: GitFollowErrorCode, message: string, options: { commit?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'GitFollowError';
    this.code = code;
    if (options.commit !== undefined) this.commit = options.commit;
  }
}

/** Policy repositories hold tens of files; a thousand is a wrong subdir or a wrong repository. */
export const MAX_POLICY_FILES = 1000;
/** All policy files of one commit together; with the per-file bound, memory per snapshot is known. */
export const MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024;
/** The whole tree listing (every file, not only policy files): ~100k paths. */
const MAX_TREE_LISTING_BYTES = 16 * 1024 * 1024;
/** rev-parse, init and fetch print a line or nothing (fetch runs with --quiet). */
const MAX_SMALL_OUTPUT_BYTES = 64 * 1024;
/** The same pattern as `sluice validate` uses for a directory. */
const POLICY_FILE = /\.ya?ml$/;
const COMMIT = /^[0-9a-f]{40}([0-9a-f]{24})?$/;
/**
 * Transports that run commands or read our file descriptors are refused whatever the user's git
 * config says; gc runs inside the fetch (not detached), so it is under the same deadline and
 * leaves no process behind.
 */
const SAFE_CONFIG = ['protocol.ext.allow=never', 'protocol.fd.allow=never', 'gc.autoDetach=false', 'maintenance.autoDetach=false'];

export class GitFollower {
  readonly #o: GitFollowerOptions;
  readonly #events: GitFollowerEvents;
  /** The repository as git is given it: local paths made absolute, since git runs elsewhere. */
  readonly #repo: string;
  /** The repository as logs and messages show it: no password or token. */
  readonly #shownRepo: string;
  readonly #subdir: string | undefined;
  readonly #mirror: string;
  readonly #abort = new AbortController();
  #head: string | undefined;
  #lastError: GitFollowError | undefined;
  /** code + message of the failure last reported; a repeat of it is logged at debug only. */
  #failureKey: string | undefined;
  /** Fetches asked for, and the last request the finished fetches have served. */
  #requested = 0;
  #served = 0;
  #waiting: { seq: number; resolve: () => void }[] = [];
  #loop: Promise<void> | undefined;
  #running = false;
  #started: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #interval: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;

  constructor(options: GitFollowerOptions, events: GitFollowerEvents) {
    // Everything that reaches git's command line is checked here, so none of it can be an option.
    const problem = (field: string, value: unknown, why: string): Error =>
      new Error(`GitFollower: ${field} ${JSON.stringify(value)} ${why}`);
    const repoWhy = repoProblem(options.repo);
    if (repoWhy) throw problem('repo', options.repo, repoWhy);
    const branchWhy = branchProblem(options.branch);
    if (branchWhy) throw problem('branch', options.branch, branchWhy);
    const subdir = options.subdir === undefined ? undefined : normalSubdir(options.subdir);
    if (typeof subdir === 'object') throw problem('subdir', options.subdir, subdir.problem);
    if (typeof options.workDir !== 'string' || options.workDir === '') throw problem('workDir', options.workDir, 'must be a directory path');
    const ms = (field: 'intervalMs' | 'debounceMs' | 'timeoutMs', min: number): void => {
      const v = options[field];
      if (!Number.isFinite(v) || v < min || v > 2 ** 31 - 1) throw problem(field, v, `must be a number of milliseconds from ${min} to ${2 ** 31 - 1}`);
    };
    ms('intervalMs', 1);
    ms('debounceMs', 0);
    ms('timeoutMs', 1);
    this.#o = options;
    this.#events = events;
    this.#repo = isLocalPath(options.repo) ? resolve(options.repo) : options.repo;
    this.#shownRepo = redact(this.#repo, this.#repo);
    this.#subdir = subdir;
    this.#mirror = join(resolve(options.workDir), 'mirror.git');
  }

  /** First fetch; resolves after it succeeded or failed (a failure is reported through error(), never thrown). */
  start(): Promise<void> {
    this.#started ??= this.refresh();
    return this.#started;
  }

  /** A webhook said the repo changed: fetch soon (debounced), sooner than the interval. */
  poke(): void {
    if (this.#closing || this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      void this.#request();
    }, this.#o.debounceMs);
    this.#debounce.unref();
  }

  /** Fetch now and resolve when done (for tests and for the webhook handler that wants to wait). */
  refresh(): Promise<void> {
    return this.#request();
  }

  /** Commit of the last snapshot. */
  get head(): string | undefined {
    return this.#head;
  }

  /** Cleared by the next successful fetch. */
  get lastError(): GitFollowError | undefined {
    return this.#lastError;
  }

  /** Stops timers, kills a running git, idempotent; resolves once nothing of it runs any more. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#interval);
      clearTimeout(this.#debounce);
      this.#abort.abort();
      await this.#loop;
      for (const w of this.#waiting.splice(0)) w.resolve();
    })();
    return this.#closing;
  }

  /** Resolves after a fetch that started after this call has finished (or on close). */
  #request(): Promise<void> {
    if (this.#closing) return Promise.resolve();
    const seq = ++this.#requested;
    const done = new Promise<void>((resolve) => this.#waiting.push({ seq, resolve }));
    if (!this.#running) this.#loop = this.#run();
    return done;
  }

  async #run(): Promise<void> {
    // The flag is cleared in the same synchronous step as the loop's last test (no await between),
    // so a request made once waiters are woken starts a new loop instead of joining a leaving one.
    this.#running = true;
    try {
      while (this.#served < this.#requested && !this.#closing) {
        clearTimeout(this.#interval);
        // Everything asked for up to now is served by this fetch: it starts after all of it.
        const serves = this.#requested;
        try {
          await this.#fetchOnce();
        } catch (err) {
          // A bug of ours (git failures never get here); the waiters are served all the same.
          this.#o.log.error({ err }, 'git follower fetch threw');
        }
        this.#served = serves;
        const served = this.#waiting.filter((w) => w.seq <= serves);
        this.#waiting = this.#waiting.filter((w) => w.seq > serves);
        for (const w of served) w.resolve();
      }
    } finally {
      this.#running = false;
    }
    if (!this.#closing && this.#started) {
      this.#interval = setTimeout(() => void this.#request(), this.#o.intervalMs);
      this.#interval.unref();
    }
  }

  async #fetchOnce(): Promise<void> {
    const { log } = this.#o;
    log.debug({ repo: this.#shownRepo, branch: this.#o.branch }, 'git fetch started');
    let outcome: RepoSnapshot | string | GitFollowError;
    try {
      outcome = await this.#fetchAndRead();
    } catch (err) {
      if (this.#closing) return;
      outcome = this.#asFollowError(err);
    }
    if (this.#closing) return;
    log.debug({ outcome: typeof outcome === 'string' ? 'unchanged' : outcome instanceof GitFollowError ? outcome.code : 'new commit' }, 'git fetch finished');
    if (outcome instanceof GitFollowError) return this.#failed(outcome);
    if (this.#lastError) log.info({ repo: this.#shownRepo, branch: this.#o.branch, was: this.#lastError.code }, 'git follower recovered');
    this.#lastError = undefined;
    this.#failureKey = undefined;
    if (typeof outcome === 'string') return;
    this.#head = outcome.commit;
    log.info({ commit: outcome.commit, files: outcome.files.length, subdir: this.#subdir }, 'policy repository at a new commit');
    if (outcome.files.length === 0) log.warn({ commit: outcome.commit, subdir: this.#subdir }, 'no policy files at this commit');
    this.#emit(() => this.#events.snapshot(outcome));
  }

  /** A snapshot of a new commit, or the commit itself when it is the head already. */
  async #fetchAndRead(): Promise<RepoSnapshot | string> {
    const { branch, timeoutMs } = this.#o;
    const git = (args: readonly string[], maxStdoutBytes: number, input?: string): Promise<Buffer> => {
      const opts: GitRunOptions = {
        timeoutMs,
        maxStdoutBytes,
        signal: this.#abort.signal,
        config: SAFE_CONFIG,
        gitDir: this.#mirror,
        ...(input === undefined ? {} : { input }),
      };
      return runGit(args, opts);
    };
    await this.#ensureMirror();
    await this.#removeStaleLocks();
    const ref = `refs/heads/${branch}`;
    try {
      await git(['fetch', '--quiet', '--no-tags', '--', this.#repo, `+${ref}:${ref}`], MAX_SMALL_OUTPUT_BYTES);
    } catch (err) {
      throw this.#asFollowError(err, 'fetch');
    }
    let commit: string;
    try {
      commit = (await git(['rev-parse', '--verify', `${ref}^{commit}`], MAX_SMALL_OUTPUT_BYTES)).toString('utf8').trim();
      if (!COMMIT.test(commit)) throw new Error(`git rev-parse gave ${JSON.stringify(commit.slice(0, 100))}`);
    } catch (err) {
      throw this.#asFollowError(err, 'read');
    }
    if (commit === this.#head) return commit;
    try {
      // Frozen: the same snapshot goes to every consumer of the event, none may edit it for the rest.
      const files = Object.freeze((await this.#readPolicyFiles(git, commit)).map((f) => Object.freeze(f)));
      return Object.freeze({ commit, files });
    } catch (err) {
      throw this.#asFollowError(err, 'read', commit);
    }
  }

  async #readPolicyFiles(
    git: (args: readonly string[], maxStdoutBytes: number, input?: string) => Promise<Buffer>,
    commit: string,
  ): Promise<PolicyFile[]> {
    const subdir = this.#subdir;
    const listing = await git(
      ['ls-tree', '-r', '-z', '--full-tree', commit, ...(subdir === undefined ? [] : ['--', subdir])],
      MAX_TREE_LISTING_BYTES,
    );
    const where = subdir === undefined ? '' : ` under ${subdir}/`;
    const entries = parseLsTree(listing)
      // Symlinks are skipped, not followed: their target may be outside the repository.
      .filter((e) => e.type === 'blob' && e.mode !== '120000' && isPolicyPath(e.path, subdir))
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    if (entries.length > MAX_POLICY_FILES) {
      throw new GitFollowError('too-large', `${entries.length} policy files${where} at ${commit}; at most ${MAX_POLICY_FILES}`, { commit });
    }
    if (entries.length === 0) return [];
    const oids = entries.map((e) => e.oid);
    const input = `${oids.join('\n')}\n`;
    // Sizes first, so a file too large is refused by name before any content is read.
    const sizes = parseBatchCheck((await git(['cat-file', '--batch-check'], 128 * oids.length, input)).toString('utf8'), oids);
    let total = 0;
    entries.forEach((e, i) => {
      const size = sizes[i]!;
      if (size > MAX_POLICY_BYTES) {
        throw new GitFollowError('too-large', `${e.path} is ${size} bytes at ${commit}; a policy file may be at most ${MAX_POLICY_BYTES}`, { commit });
      }
      total += size;
    });
    if (total > MAX_SNAPSHOT_BYTES) {
      throw new GitFollowError('too-large', `policy files${where} total ${total} bytes at ${commit}; at most ${MAX_SNAPSHOT_BYTES}`, { commit });
    }
    const blobs = parseBatch(await git(['cat-file', '--batch'], total + 128 * oids.length, input), oids);
    const utf8 = new TextDecoder('utf-8', { fatal: true });
    return entries.map((e, i) => {
      try {
        return { path: e.path, text: utf8.decode(blobs[i]!) };
      } catch {
        throw new GitFollowError('read-failed', `${e.path} at ${commit} is not UTF-8 text`, { commit });
      }
    });
  }

  /**
   * A git killed with SIGKILL (our escalation, the OOM killer, a pod deleted mid-fetch) leaves its
   * lock files behind, and every later fetch fails on them: "Unable to create '….lock': File
   * exists". A lock older than any command of ours may run cannot belong to a live one.
   */
  async #removeStaleLocks(): Promise<void> {
    const staleBefore = Date.now() - 2 * longestRunMs(this.#o.timeoutMs);
    const locks = [`refs/heads/${this.#o.branch}.lock`, 'packed-refs.lock', 'HEAD.lock', 'config.lock', 'shallow.lock'];
    for (const lock of locks) {
      const file = join(this.#mirror, lock);
      const mtimeMs = await stat(file).then(
        (s) => s.mtimeMs,
        () => undefined,
      );
      if (mtimeMs === undefined || mtimeMs > staleBefore) continue;
      await unlink(file).catch(() => {});
      this.#o.log.warn({ lock: file, ageMs: Date.now() - mtimeMs }, 'removed a stale git lock file left by a killed git');
    }
  }

  /**
   * (Re)creates the mirror when it is missing: at first start, and after someone emptied workDir.
   * `git init` on an existing repository only fills in what is missing, so a crash half-way
   * through an earlier init is repaired too.
   */
  async #ensureMirror(): Promise<void> {
    const ok = await stat(join(this.#mirror, 'HEAD')).then(
      (s) => s.isFile(),
      () => false,
    );
    if (ok) return;
    try {
      await mkdir(this.#mirror, { recursive: true });
      await runGit(['init', '--bare', '--quiet', this.#mirror], { timeoutMs: this.#o.timeoutMs, maxStdoutBytes: MAX_SMALL_OUTPUT_BYTES, signal: this.#abort.signal });
    } catch (err) {
      if (err instanceof GitCommandError && err.kind !== 'failed') throw this.#asFollowError(err, 'fetch');
      const why = err instanceof Error ? err.message : String(err);
      throw new GitFollowError('fetch-failed', `cannot create the git mirror in ${this.#mirror}: ${why}`, { cause: err });
    }
  }

  #asFollowError(err: unknown, stage: 'fetch' | 'read' = 'read', commit?: string): GitFollowError {
    if (err instanceof GitFollowError) return err;
    const at = commit === undefined ? {} : { commit };
    const msg = (m: string): string => redact(m, this.#repo);
    if (err instanceof GitCommandError) {
      if (err.kind === 'timeout') return new GitFollowError('timeout', msg(err.message), { ...at, cause: err });
      if (err.kind === 'too-large') return new GitFollowError('too-large', msg(err.message), { ...at, cause: err });
      if (err.kind === 'missing') return new GitFollowError('fetch-failed', err.message, { cause: err });
      // LC_ALL=C makes this wording stable; it is git's answer for a branch the remote lacks.
      if (stage === 'fetch' && /couldn't find remote ref/i.test(err.stderr)) {
        return new GitFollowError('branch-missing', `branch ${this.#o.branch} not found in ${this.#shownRepo}`, { cause: err });
      }
      const code = stage === 'fetch' ? 'fetch-failed' : 'read-failed';
      return new GitFollowError(code, msg(stage === 'fetch' ? `fetch from ${this.#shownRepo} failed: ${err.message}` : err.message), { ...at, cause: err });
    }
    const text = err instanceof Error ? err.message : String(err);
    return new GitFollowError(stage === 'fetch' ? 'fetch-failed' : 'read-failed', msg(text), { ...at, cause: err });
  }

  /** An outage is one warning and one error() call, not one per interval until it ends. */
  #failed(err: GitFollowError): void {
    this.#lastError = err;
    // Numbers masked: "after 3001 ms" and "after 2998 ms" are one outage, not two.
    const key = `${err.code}\n${err.commit ?? ''}\n${err.message.replace(/\d+/g, '#')}`;
    const fields = { repo: this.#shownRepo, branch: this.#o.branch, code: err.code, commit: err.commit, head: this.#head, err: err.message };
    if (key === this.#failureKey) {
      this.#o.log.debug(fields, 'git follower still failing');
      return;
    }
    this.#failureKey = key;
    this.#o.log.warn(fields, 'git follower failed; keeping the last snapshot');
    this.#emit(() => this.#events.error(err));
  }

  #emit(call: () => void): void {
    try {
      call();
    } catch (err) {
      // The caller's bug must not stop the follower; the next change is reported anyway.
      this.#o.log.error({ err }, 'git follower event handler threw');
    }
  }
}

/** Policy files: *.yaml and *.yml, under `subdir`, with no hidden segment (.github, ..data). */
function isPolicyPath(path: string, subdir: string | undefined): boolean {
  if (subdir !== undefined && !path.startsWith(`${subdir}/`)) return false;
  return POLICY_FILE.test(path) && !path.split('/').some((s) => s.startsWith('.'));
}
