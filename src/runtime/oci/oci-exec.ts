import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { asPrismError, PrismError } from '../../core/errors.js';
import type { ExecOptions, TaskProcess } from '../driver.js';
import { readOomKills } from './cgroups.js';
import { killProcessTree } from './process-tree.js';
import { readRuncLogErrors, runcError, type Runc } from './runc.js';
import { buildProcess } from './runtime-spec.js';

type Logger = { warn(o: object, msg?: string): void };

const SIGNAL_NAMES = new Map<number, string>(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/**
 * Runs one command with `runc exec`. runc hands our pipes straight to the process (no terminal), so
 * the bytes are exact, and it exits with the command's status (128+n when killed by signal n).
 * runc's own failures are told apart from the command's exit 255 by its JSON log.
 */
export async function startExec(
  runc: Runc, id: string, taskDir: string, opts: ExecOptions, ready: Promise<void>, log?: Logger,
): Promise<TaskProcess> {
  const dir = join(taskDir, 'exec');
  const name = randomUUID();
  const files = { process: join(dir, `${name}.json`), pid: join(dir, `${name}.pid`), log: join(dir, `${name}.log`) };
  // Not recursive: an exec racing a destroy must not recreate the task directory.
  const prepare = mkdir(dir).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'EEXIST') throw e; }).then(() =>
    writeFile(files.process, JSON.stringify(buildProcess(opts.argv, opts.env, opts.cwd))),
  );
  const [readiness, prepared, oomBefore] = await Promise.allSettled([ready, prepare, readOomKills(id)]);
  if (readiness.status === 'rejected' || prepared.status === 'rejected') {
    await rm(files.process, { force: true });
    throw readiness.status === 'rejected' ? readiness.reason : asPrismError((prepared as PromiseRejectedResult).reason);
  }
  const oomCount = (oomBefore as PromiseFulfilledResult<number>).value;
  const started = Date.now();

  const args = ['--root', runc.root, '--log', files.log, '--log-format', 'json'];
  args.push('exec', '--process', files.process, '--pid-file', files.pid, id);
  const child = spawn(runc.binary, args, { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', (e) => reject(new PrismError('UNAVAILABLE', `cannot run ${runc.binary}: ${e.message}`, { cause: e })));
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  // Both are pipes by the stdio option above.
  const stdout = child.stdout!;
  const stderr = child.stderr!;
  // A consumer that closes stdin early must not crash the daemon with EPIPE.
  child.stdin?.on('error', () => {});

  const result = (async () => {
    try {
      const [status] = await Promise.all([
        exited,
        finished(stdout).catch(() => {}),
        finished(stderr).catch(() => {}),
      ]);
      const durationMs = Date.now() - started;
      if (status.code === null) {
        // runc itself was killed; the command's fate is unknown, report the signal we saw.
        return { exitCode: 128 + (constants.signals[status.signal!] ?? 0), signal: status.signal!, oomKilled: false, durationMs };
      }
      // runc writes the pid file once the command runs; without it a 255 may be runc's own failure.
      if (status.code === 255 && !existsSync(files.pid)) {
        const runcFailure = await readRuncLogErrors(files.log);
        if (runcFailure) return startFailure(runcFailure, durationMs);
      }
      const signal = status.code > 128 ? SIGNAL_NAMES.get(status.code - 128) : undefined;
      const oomKilled = signal === 'SIGKILL' && oomCount >= 0 && (await readOomKills(id)) > oomCount;
      return { exitCode: status.code, ...(signal ? { signal } : {}), oomKilled, durationMs };
    } finally {
      await Promise.all(Object.values(files).map((f) => rm(f, { force: true })));
    }
  })();
  // Callers get the rejection through `result`; this only keeps an unawaited one from crashing the daemon.
  result.catch(() => {});

  return {
    stdin: child.stdin,
    stdout,
    stderr,
    result,
    kill(signal: NodeJS.Signals = 'SIGKILL') {
      const done = () => child.exitCode !== null || child.signalCode !== null;
      killExec(done() ? null : files.pid, done, signal).catch((e: unknown) =>
        log?.warn({ err: e, task: id }, 'killing exec process tree failed'),
      );
    },
  };
}

/**
 * The command never ran. Missing task state is an error of the call; anything else (no such binary,
 * bad cwd) is reported like a shell would: 127 for not found, 126 otherwise, with runc's message on
 * stderr (runc already wrote it there).
 */
function startFailure(message: string, durationMs: number) {
  const err = runcError('exec', message);
  if (err.code === 'NOT_FOUND' || err.code === 'FAILED_PRECONDITION') {
    throw new PrismError('FAILED_PRECONDITION', `task is not running: ${message}`, { cause: err });
  }
  // Only a missing program is "not found"; a missing cwd is reported as "cannot execute".
  const notFound = /exec: ".*": (executable file not found|stat .*: no such file or directory)/.test(message);
  return { exitCode: notFound ? 127 : 126, oomKilled: false, durationMs };
}

/** Waits for runc to write the command's host pid, then kills the command's whole process tree. */
async function killExec(pidFile: string | null, done: () => boolean, signal: NodeJS.Signals): Promise<void> {
  if (pidFile === null) return;
  for (let i = 0; i < 500 && !done(); i++) {
    const text = await readFile(pidFile, 'utf8').catch(() => '');
    const pid = Number(text.trim());
    if (pid > 0) return killProcessTree(pid, signal);
    await new Promise((r) => setTimeout(r, 10));
  }
}
