import { readFile, writeFile } from 'node:fs/promises';
import { PrismError, type ErrorCode } from '../../core/errors.js';
import { runCommand } from '../command.js';

const COMMAND_TIMEOUT_MS = 30_000;

export interface RuncOutput {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ContainerState {
  id: string;
  /** Host pid of the container's init; 0 when stopped. */
  pid: number;
  status: 'creating' | 'created' | 'running' | 'paused' | 'stopped';
}

/**
 * Translates runc's error text into a PrismError. This is the one place that reads runc's messages
 * (runc has no machine-readable error codes); everything above branches on `code`.
 */
export function runcError(operation: string, message: string, cause?: unknown): PrismError {
  const text = message.trim() || 'runc failed without a message';
  const rules: Array<[RegExp, ErrorCode]> = [
    [/container does not exist/i, 'NOT_FOUND'],
    [/already exists/i, 'ALREADY_EXISTS'],
    [/not running|stopped container|paused container|that is not stopped/i, 'FAILED_PRECONDITION'],
    [/cannot allocate memory|resource temporarily unavailable|no space left on device/i, 'RESOURCE_EXHAUSTED'],
  ];
  const code = rules.find(([re]) => re.test(text))?.[1] ?? 'INTERNAL';
  return new PrismError(code, `runc ${operation}: ${text}`, { cause });
}

/** Error lines of a `--log-format json` log, which is where runc reports when its stdio is not ours. */
export async function readRuncLogErrors(logFile: string): Promise<string> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  const msgs: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if ((entry.level === 'error' || entry.level === 'fatal') && entry.msg) msgs.push(entry.msg);
    } catch {
      msgs.push(line);
    }
  }
  return msgs.join('; ');
}

/** The runc CLI with one state root and the global flags of the host's cgroups (e.g. --systemd-cgroup). */
export class Runc {
  constructor(
    readonly binary: string,
    readonly root: string,
    readonly globalFlags: string[] = [],
  ) {}

  /** Runs runc; resolves with the exit code, rejects only when runc cannot be started or hangs. */
  async run(args: string[]): Promise<RuncOutput> {
    const r = await runCommand(this.binary, ['--root', this.root, ...this.globalFlags, ...args], { timeoutMs: COMMAND_TIMEOUT_MS });
    const stderr = r.stderr.toString();
    if (r.timedOut) throw new PrismError('DEADLINE_EXCEEDED', `runc ${args[0]} timed out`);
    if (r.code === 127 && stderr.startsWith('cannot run')) throw new PrismError('UNAVAILABLE', `cannot run ${this.binary}: ${stderr.trim()}`);
    return { code: r.code ?? 128, stdout: r.stdout.toString(), stderr };
  }

  private async check(operation: string, args: string[]): Promise<RuncOutput> {
    const out = await this.run(args);
    if (out.code !== 0) throw runcError(operation, stripLogPrefix(out.stderr));
    return out;
  }

  /** null when runc does not know the container. */
  async state(id: string): Promise<ContainerState | null> {
    const out = await this.run(['state', id]);
    if (out.code !== 0) {
      const err = runcError('state', stripLogPrefix(out.stderr));
      if (err.code === 'NOT_FOUND') return null;
      throw err;
    }
    return JSON.parse(out.stdout) as ContainerState;
  }

  async list(): Promise<string[]> {
    const out = await this.check('list', ['list', '--format', 'json']);
    const entries = JSON.parse(out.stdout || 'null') as Array<{ id: string }> | null;
    return (entries ?? []).map((e) => e.id);
  }

  /**
   * `runc run -d`. Its stdio is /dev/null: the container's init inherits runc's stdio, so a pipe
   * would never close. runc's own errors are therefore read back from a JSON log file.
   */
  async runDetached(id: string, bundle: string, pidFile: string, logFile: string, wrapper: string[] = []): Promise<void> {
    await writeFile(logFile, ''); // one log per run, so old errors are not reported again
    const args = ['--root', this.root, ...this.globalFlags, '--log', logFile, '--log-format', 'json'];
    args.push('run', '-d', '--bundle', bundle, '--pid-file', pidFile);
    // A wrapper (the exec agent's `prism-init listen PATH --`) puts a listening socket on fd 3 for
    // runc to hand to the container's init.
    if (wrapper.length) args.push('--preserve-fds', '1');
    args.push(id);
    const [cmd, ...pre] = wrapper.length ? [...wrapper, this.binary] : [this.binary];
    // The wrapper reports its own failures on stderr: a file, since the init would keep a pipe open.
    const errFile = `${logFile}.stderr`;
    await writeFile(errFile, '');
    const r = await runCommand(cmd!, [...pre, ...args], { timeoutMs: COMMAND_TIMEOUT_MS, discardStdout: true, stderrFile: errFile });
    const status = r.code ?? r.signal ?? 'unknown';
    if (status === 0) return;
    const msg = (await readRuncLogErrors(logFile)) || (await readFile(errFile, 'utf8').catch(() => '')).trim();
    throw runcError('run', msg || `exited with ${status}`);
  }

  /** `runc pause`: freezes every process of the container (cgroup v1 freezer, v2 cgroup.freeze). */
  async pause(id: string): Promise<void> {
    await this.check('pause', ['pause', id]);
  }

  /** `runc resume`: thaws a paused container. */
  async resume(id: string): Promise<void> {
    await this.check('resume', ['resume', id]);
  }

  /** Sends a signal to the init; a container that is already stopped or gone is not an error. */
  async kill(id: string, signal: string): Promise<void> {
    const out = await this.run(['kill', id, signal]);
    if (out.code === 0) return;
    const err = runcError('kill', stripLogPrefix(out.stderr));
    if (err.code !== 'NOT_FOUND' && err.code !== 'FAILED_PRECONDITION') throw err;
  }

  /** Deletes the container; a container runc does not know is not an error. */
  async delete(id: string, force: boolean): Promise<void> {
    const out = await this.run(force ? ['delete', '-f', id] : ['delete', id]);
    if (out.code === 0) return;
    const err = runcError('delete', stripLogPrefix(out.stderr));
    if (err.code !== 'NOT_FOUND') throw err;
  }

  async version(): Promise<string> {
    const out = await this.check('--version', ['--version']);
    return out.stdout.split('\n')[0]?.trim() ?? '';
  }
}

/** runc's default text log format wraps each message in `time=... level=error msg="..."`. */
function stripLogPrefix(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => /msg="((?:[^"\\]|\\.)*)"/.exec(l)?.[1]?.replace(/\\"/g, '"') ?? l)
    .join('; ');
}
