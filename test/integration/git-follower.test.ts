// The git follower against real git: a bare "remote" repository and a working clone in a temporary
// folder, commits pushed the way a policy repository receives them, the follower mirroring it by
// path and by file:// URL. Tests wait on the follower's events (bounded), never on a sleep; a
// transport that hangs is a real one, ssh with a GIT_SSH_COMMAND that never answers.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { branchProblem, normalSubdir, redact, runGit, GitCommandError } from '../../src/control/git-cli.ts';
import { GitFollower, MAX_POLICY_FILES, type GitFollowError, type GitFollowerOptions, type RepoSnapshot } from '../../src/control/git-follower.ts';
import { MAX_POLICY_BYTES } from '../../src/policy/load.ts';
import { closeAfterEach, eventually } from '../support/lifecycle.ts';

const exec = promisify(execFile);
const track = closeAfterEach();

/** The test's own git commands see none of the machine's git config (signing, hooks, templates). */
const TEST_GIT_ENV = {
  ...process.env,
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'sluice test',
  GIT_AUTHOR_EMAIL: 'test@sluice.invalid',
  GIT_COMMITTER_NAME: 'sluice test',
  GIT_COMMITTER_EMAIL: 'test@sluice.invalid',
  LC_ALL: 'C',
};

async function git(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await exec('git', ['-c', 'user.email=test@sluice.invalid', '-c', 'user.name=sluice test', '-c', 'commit.gpgsign=false', ...args], {
    cwd,
    env: TEST_GIT_ENV,
    timeout: 10_000,
  });
  return stdout.trim();
}

const doc = (name: string): string => `apiVersion: sluice.dev/v1alpha1\nkind: SidecarPolicy\nmetadata: {name: ${name}}\nspec: {}\n`;

interface Fixture {
  readonly root: string;
  /** The bare repository the follower fetches from. */
  readonly remote: string;
  /** The follower's own directory. */
  readonly workDir: string;
  /**
   * Writes (string), symlinks ({ link }) or deletes (null) files in the working clone, commits
   * everything and pushes it to `branch` of the remote; resolves with the new commit.
   */
  commit(files: Record<string, string | { link: string } | null>, branch?: string): Promise<string>;
  /** Pushes the clone's HEAD to `branch` of the remote again. */
  push(branch?: string): Promise<void>;
  /** (Re)creates the bare remote, empty. */
  initRemote(): Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), 'sluice-git-'));
  track({ close: () => rm(root, { recursive: true, force: true }) });
  const remote = join(root, 'remote.git');
  const work = join(root, 'work');
  const initRemote = async (): Promise<void> => {
    await git(root, 'init', '--quiet', '--bare', remote);
  };
  await initRemote();
  await git(root, 'init', '--quiet', '-b', 'main', work);
  const push = async (branch = 'main'): Promise<void> => {
    await git(work, 'push', '--quiet', '--force', remote, `HEAD:refs/heads/${branch}`);
  };
  return {
    root,
    remote,
    workDir: join(root, 'follower'),
    initRemote,
    push,
    async commit(files, branch = 'main') {
      for (const [path, content] of Object.entries(files)) {
        const file = join(work, path);
        await mkdir(dirname(file), { recursive: true });
        if (content === null) await rm(file);
        else if (typeof content === 'string') await writeFile(file, content);
        else await symlink(content.link, file);
      }
      await git(work, 'add', '-A');
      await git(work, 'commit', '--quiet', '--allow-empty', '-m', 'change');
      await push(branch);
      return git(work, 'rev-parse', 'HEAD');
    },
  };
}

/** Every JSON line the follower logged, at every level. */
function capturedLog() {
  const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { log, lines, count: (msg: string) => lines.filter((l) => l.msg === msg).length };
}

/** The follower's events as arrays, and a bounded wait for the nth one. */
function recorder() {
  const snapshots: RepoSnapshot[] = [];
  const errors: GitFollowError[] = [];
  const wakes = new Set<() => void>();
  const wake = (): void => {
    for (const w of [...wakes]) w();
  };
  const waitFor = (what: string, check: () => boolean, timeoutMs: number): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const run = (): void => {
        if (!check()) return;
        wakes.delete(run);
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        wakes.delete(run);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      wakes.add(run);
      run();
    });
  return {
    snapshots,
    errors,
    events: {
      snapshot: (s: RepoSnapshot) => (snapshots.push(s), wake()),
      error: (e: GitFollowError) => (errors.push(e), wake()),
    },
    snapshot: (n: number, timeoutMs = 3000) => waitFor(`snapshot #${n}`, () => snapshots.length >= n, timeoutMs).then(() => snapshots[n - 1]!),
    error: (n: number, timeoutMs = 3000) => waitFor(`error #${n}`, () => errors.length >= n, timeoutMs).then(() => errors[n - 1]!),
  };
}

function follower(fx: Fixture, over: Partial<GitFollowerOptions> = {}) {
  const r = recorder();
  const logs = capturedLog();
  const options: GitFollowerOptions = {
    repo: fx.remote,
    branch: 'main',
    workDir: fx.workDir,
    // Long enough never to fire in a test that does not ask for it.
    intervalMs: 600_000,
    debounceMs: 10,
    timeoutMs: 5000,
    log: logs.log,
    ...over,
  };
  const f = track(new GitFollower(options, r.events));
  return { f, r, logs, options };
}

/** Runs `body` with some environment variables set for the git the follower spawns. */
async function withEnv<T>(vars: Record<string, string>, body: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return await body();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** An ssh transport that connects to nothing and never answers: `marker` appears once it runs. */
const hangingSsh = (marker: string): Record<string, string> => ({
  GIT_SSH_COMMAND: `touch '${marker}'; exec sleep 30 #`,
  GIT_SSH_VARIANT: 'simple',
});

describe('GitFollower', () => {
  it('reports the first commit with its policy files, sorted by path', async () => {
    const fx = await fixture();
    const sha = await fx.commit({ 'b.yml': doc('b'), 'a.yaml': doc('a'), 'dir/c.yaml': doc('c') });
    const { f, r } = follower(fx);
    expect(f.head).toBeUndefined();
    await f.start();
    expect(r.snapshots).toEqual([
      {
        commit: sha,
        files: [
          { path: 'a.yaml', text: doc('a') },
          { path: 'b.yml', text: doc('b') },
          { path: 'dir/c.yaml', text: doc('c') },
        ],
      },
    ]);
    expect(sha).toMatch(/^[0-9a-f]{40}$/);
    expect(f.head).toBe(sha);
    expect(f.lastError).toBeUndefined();
    expect(r.errors).toEqual([]);
  });

  it('sees a pushed commit on refresh(), says nothing for an unchanged one, and a restart reuses the mirror', async () => {
    const fx = await fixture();
    await fx.commit({ 'a.yaml': doc('a'), 'b.yaml': doc('b') });
    const { f, r } = follower(fx, { repo: pathToFileURL(fx.remote).href });
    await f.start();
    const second = await fx.commit({ 'a.yaml': doc('a2'), 'b.yaml': null });
    await f.refresh();
    expect(r.snapshots).toHaveLength(2);
    expect(r.snapshots[1]).toEqual({ commit: second, files: [{ path: 'a.yaml', text: doc('a2') }] });
    await f.refresh();
    await f.refresh();
    expect(r.snapshots).toHaveLength(2);
    expect(f.head).toBe(second);

    await f.close();
    await f.close();
    await f.refresh(); // closed: resolves, fetches nothing
    expect(r.snapshots).toHaveLength(2);
    // A new process on the same directory: its first snapshot is the head, whatever the mirror held.
    const again = follower(fx, { repo: pathToFileURL(fx.remote).href });
    await again.f.start();
    expect(again.r.snapshots.map((s) => s.commit)).toEqual([second]);
  });

  it('poke(): pokes within the debounce window are one fetch, sooner than the interval', async () => {
    const fx = await fixture();
    await fx.commit({ 'a.yaml': doc('a') });
    const { f, r, logs } = follower(fx, { debounceMs: 30 });
    await f.start();
    expect(logs.count('git fetch started')).toBe(1);
    const second = await fx.commit({ 'a.yaml': doc('a2') });
    f.poke();
    f.poke();
    f.poke();
    expect((await r.snapshot(2)).commit).toBe(second);
    // Had the pokes made two fetches, the second would run before the one refresh() asks for.
    await f.refresh();
    expect(logs.count('git fetch started')).toBe(3);
  });

  it('never runs two fetches at once: requests during a fetch are served by one more after it', async () => {
    const fx = await fixture();
    await fx.commit({ 'a.yaml': doc('a') });
    const { f, logs } = follower(fx);
    await f.start();
    const finishedWhen: number[] = [];
    const note = (p: Promise<void>): Promise<void> => p.then(() => void finishedWhen.push(logs.count('git fetch finished')));
    // The first starts a fetch at once; the two made while it runs share the next one.
    await Promise.all([note(f.refresh()), note(f.refresh()), note(f.refresh())]);
    expect(finishedWhen).toEqual([2, 3, 3]);
    const order = logs.lines.map((l) => l.msg).filter((m) => m.startsWith('git fetch '));
    expect(order).toEqual(['started', 'finished', 'started', 'finished', 'started', 'finished'].map((w) => `git fetch ${w}`));
  });

  it('polls on its interval', async () => {
    const fx = await fixture();
    await fx.commit({ 'a.yaml': doc('a') });
    const { f, r } = follower(fx, { intervalMs: 50 });
    await f.start();
    const second = await fx.commit({ 'a.yaml': doc('a2') });
    expect((await r.snapshot(2)).commit).toBe(second);
  });

  it('subdir: only policy files under it, named from the repository root', async () => {
    const fx = await fixture();
    await fx.commit({
      'top.yaml': doc('top'),
      'policies/a.yaml': doc('a'),
      'policies/team/b.yaml': doc('b'),
      'policies-old/c.yaml': doc('c'),
      'other/policies/d.yaml': doc('d'),
    });
    const { f, r } = follower(fx, { subdir: 'policies/' });
    await f.start();
    expect(r.snapshots[0]?.files.map((p) => p.path)).toEqual(['policies/a.yaml', 'policies/team/b.yaml']);
  });

  it('hidden paths, other extensions and symlinks are not policy files', async () => {
    const fx = await fixture();
    await fx.commit({
      'a.yaml': doc('a'),
      'dir/b.yml': doc('b'),
      '.hidden.yaml': doc('hidden'),
      '.github/workflows/ci.yaml': 'on: push\n',
      'dir/..data/c.yaml': doc('configmap copy'),
      'README.md': '# policies\n',
      'a.yaml.bak': doc('old'),
      'UPPER.YAML': doc('upper'),
      'link.yaml': { link: '/etc/passwd' },
    });
    const { f, r } = follower(fx);
    await f.start();
    expect(r.snapshots[0]?.files.map((p) => p.path)).toEqual(['a.yaml', 'dir/b.yml']);
  });

  it('a remote that disappears: fetch-failed once, the head stays, and the next good fetch clears it', async () => {
    const fx = await fixture();
    const sha = await fx.commit({ 'a.yaml': doc('a') });
    const { f, r, logs } = follower(fx);
    await f.start();
    await rm(fx.remote, { recursive: true, force: true });

    await f.refresh();
    expect(r.errors.map((e) => e.code)).toEqual(['fetch-failed']);
    expect(r.errors[0]?.message).toContain(fx.remote);
    expect(f.lastError).toBe(r.errors[0]);
    expect(f.head).toBe(sha);
    // The same failure again: no second event, and a debug line instead of a second warning.
    await f.refresh();
    await f.refresh();
    expect(r.errors).toHaveLength(1);
    expect(f.lastError?.code).toBe('fetch-failed');
    expect(logs.count('git follower failed; keeping the last snapshot')).toBe(1);
    expect(logs.count('git follower still failing')).toBe(2);

    // The remote is back with the same commit: the error clears, and there is nothing new to say.
    await fx.initRemote();
    await fx.push();
    await f.refresh();
    expect(f.lastError).toBeUndefined();
    expect(f.head).toBe(sha);
    expect(logs.count('git follower recovered')).toBe(1);
    expect(r.snapshots.map((s) => s.commit)).toEqual([sha]);
    expect(r.errors).toHaveLength(1);
  });

  it('removes a lock file a killed git left in the mirror, and leaves a fresh one alone', async () => {
    const fx = await fixture();
    await fx.commit({ 'a.yaml': doc('a') });
    const { f, r, logs } = follower(fx, { timeoutMs: 1000 });
    await f.start();
    const lock = join(fx.workDir, 'mirror.git', 'refs', 'heads', 'main.lock');
    // Fresh: it could be a live git's (another replica on a shared volume); the fetch fails on it.
    await writeFile(lock, '');
    const second = await fx.commit({ 'a.yaml': doc('a2') });
    await f.refresh();
    expect(r.errors.map((e) => e.code)).toEqual(['fetch-failed']);
    expect(r.errors[0]?.message).toMatch(/main\.lock.*File exists/);
    // Older than any git of ours may run (timeout + kill grace, twice): stale, removed.
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    await f.refresh();
    expect(f.head).toBe(second);
    expect(f.lastError).toBeUndefined();
    expect(logs.count('removed a stale git lock file left by a killed git')).toBe(1);
  });

  it('a branch the remote lacks is branch-missing, until it is pushed', async () => {
    const fx = await fixture();
    await fx.commit({ 'a.yaml': doc('a') });
    const { f, r } = follower(fx, { branch: 'release/v1' });
    await f.start();
    expect(r.errors.map((e) => [e.code, e.message])).toEqual([['branch-missing', `branch release/v1 not found in ${fx.remote}`]]);
    expect(f.head).toBeUndefined();
    expect(r.snapshots).toEqual([]);

    const sha = await fx.commit({ 'b.yaml': doc('b') }, 'release/v1');
    await f.refresh();
    expect(r.snapshots.map((s) => s.commit)).toEqual([sha]);
    expect(f.lastError).toBeUndefined();
  });

  it('a file over 1 MiB is too-large, by name, and the head stays; exactly 1 MiB is read', async () => {
    const fx = await fixture();
    const atLimit = `#${'x'.repeat(MAX_POLICY_BYTES - 2)}\n`;
    const sha = await fx.commit({ 'big.yaml': atLimit });
    const { f, r } = follower(fx);
    await f.start();
    expect(r.snapshots[0]?.files[0]?.text).toHaveLength(MAX_POLICY_BYTES);

    const tooBig = await fx.commit({ 'big.yaml': `${atLimit}#` });
    await f.refresh();
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatchObject({ code: 'too-large', commit: tooBig });
    expect(r.errors[0]?.message).toBe(`big.yaml is ${MAX_POLICY_BYTES + 1} bytes at ${tooBig}; a policy file may be at most ${MAX_POLICY_BYTES}`);
    expect(f.head).toBe(sha);
    expect(r.snapshots).toHaveLength(1);
  });

  it(`more than ${MAX_POLICY_FILES} policy files is too-large`, async () => {
    const fx = await fixture();
    const files: Record<string, string> = {};
    for (let i = 0; i <= MAX_POLICY_FILES; i++) files[`p/${i}.yaml`] = doc(`p${i}`);
    const sha = await fx.commit(files);
    const { f, r } = follower(fx);
    await f.start();
    expect(r.errors.map((e) => [e.code, e.message])).toEqual([['too-large', `${MAX_POLICY_FILES + 1} policy files at ${sha}; at most ${MAX_POLICY_FILES}`]]);
    expect(f.head).toBeUndefined();
  });

  it('close() during a fetch kills git and its transport, and reports nothing', async () => {
    const fx = await fixture();
    const marker = join(fx.root, 'ssh-started');
    const { f, r } = follower(fx, { repo: 'ssh://git.invalid/policies.git' });
    let started!: Promise<void>;
    await withEnv(hangingSsh(marker), async () => {
      started = f.start();
      await eventually('the ssh transport to start', () => stat(marker).then(() => true));
    });
    const t0 = performance.now();
    await f.close();
    await started;
    // `sleep 30` held git's stderr: closing this soon means the whole process group was killed.
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(r.errors).toEqual([]);
    expect(r.snapshots).toEqual([]);
    expect(f.lastError).toBeUndefined();
  });

  it('a git command that hangs is killed after timeoutMs and reported as timeout', async () => {
    const fx = await fixture();
    const { f, r } = follower(fx, { repo: 'ssh://git.invalid/policies.git', timeoutMs: 300 });
    const t0 = performance.now();
    await withEnv(hangingSsh(join(fx.root, 'ssh-started')), () => f.start());
    expect(performance.now() - t0).toBeLessThan(2500);
    expect(r.errors.map((e) => [e.code, e.message])).toEqual([['timeout', 'git fetch timed out after 300 ms']]);
  });

  it('a missing git binary is a clear error, and so is output past its bound', async () => {
    const fx = await fixture();
    const { f, r } = follower(fx);
    await withEnv({ PATH: join(fx.root, 'no-such-dir') }, () => f.start());
    expect(r.errors.map((e) => [e.code, e.message])).toEqual([['fetch-failed', 'git not found (git): install git or put it on the PATH']]);

    const opts = { timeoutMs: 5000, maxStdoutBytes: 1 << 20 };
    await expect(runGit(['version'], { ...opts, git: join(fx.root, 'git') })).rejects.toMatchObject({ kind: 'missing' });
    await expect(runGit(['version'], { ...opts, maxStdoutBytes: 4 })).rejects.toMatchObject({
      kind: 'too-large',
      message: 'git version wrote more than 4 bytes',
    });
    const failed = await runGit(['rev-parse', '--verify', 'refs/heads/nope'], { ...opts }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(GitCommandError);
    expect(failed).toMatchObject({ kind: 'failed', exitCode: 128 });
  });

  it('refuses at construction what git could read as an option, or not as a branch or a path', () => {
    const base: GitFollowerOptions = { repo: '/r', branch: 'main', workDir: '/w', intervalMs: 1000, debounceMs: 0, timeoutMs: 1000, log: pino({ level: 'silent' }) };
    const events = { snapshot() {}, error() {} };
    const refused = (over: Partial<GitFollowerOptions>): string => {
      try {
        new GitFollower({ ...base, ...over }, events);
      } catch (err) {
        return (err as Error).message;
      }
      return 'accepted';
    };
    expect(refused({ branch: '--upload-pack=x' })).toBe(`GitFollower: branch "--upload-pack=x" starts with '-'`);
    expect(refused({ branch: 'a..b' })).toBe(`GitFollower: branch "a..b" contains '..'`);
    expect(refused({ branch: '' })).toBe('GitFollower: branch "" must be a non-empty string');
    expect(refused({ repo: '--upload-pack=touch x' })).toBe(`GitFollower: repo "--upload-pack=touch x" starts with '-'`);
    expect(refused({ repo: 'https://h/r\nx' })).toBe('GitFollower: repo "https://h/r\\nx" contains a control character');
    expect(refused({ subdir: '../etc' })).toBe(`GitFollower: subdir "../etc" has a '.' or '..' component`);
    expect(refused({ subdir: 'a/../../b' })).toBe(`GitFollower: subdir "a/../../b" has a '.' or '..' component`);
    expect(refused({ subdir: '-x' })).toBe(`GitFollower: subdir "-x" starts with '-'`);
    expect(refused({ subdir: '/abs' })).toBe('GitFollower: subdir "/abs" must be relative to the repository root');
    expect(refused({ subdir: '.github' })).toMatch(/hidden paths are never policy files/);
    expect(refused({ intervalMs: 0 })).toBe('GitFollower: intervalMs 0 must be a number of milliseconds from 1 to 2147483647');
    expect(refused({ timeoutMs: Number.NaN })).toMatch(/^GitFollower: timeoutMs null must be/);
    expect(refused({ subdir: 'policies/prod/' })).toBe('accepted');
    expect(refused({ repo: 'git@github.com:org/policies.git' })).toBe('accepted');
    expect(normalSubdir('policies/prod//')).toBe('policies/prod');
    expect(normalSubdir('.')).toBeUndefined();
    // A token in an https URL never reaches a log line or an error message; ssh's user is no secret.
    expect(redact('fatal: unable to access https://u:tok@h/r', 'https://u:tok@h/r')).toBe('fatal: unable to access https://***@h/r');
    expect(redact('ssh://git@h/r', 'ssh://git@h/r')).toBe('ssh://git@h/r');
  });

  it('judges branch names as git check-ref-format does', async () => {
    const names = ['main', 'release/v1.2', 'feature/x-y_z', 'tëst', 'a@b', 'a.lockb', 'a..b', 'a b', 'a\tb', 'a~b', 'a^b', 'a:b', 'a?b', 'a*b', 'a[b', 'a\\b', 'a@{1}', 'x.lock', 'a/x.lock/b', 'a/.b', '.a', 'a/', '/a', 'a//b', 'a.', 'a/b.'];
    const verdicts = await Promise.all(
      names.map(async (name) => {
        const git = await exec('git', ['check-ref-format', `refs/heads/${name}`], { env: TEST_GIT_ENV }).then(
          () => true,
          () => false,
        );
        return { name, git, ours: branchProblem(name) === undefined };
      }),
    );
    expect(verdicts.filter((v) => v.git !== v.ours)).toEqual([]);
    expect(verdicts.filter((v) => v.ours).map((v) => v.name)).toEqual(['main', 'release/v1.2', 'feature/x-y_z', 'tëst', 'a@b', 'a.lockb']);
  });
});
