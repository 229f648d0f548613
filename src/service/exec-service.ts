import type { Writable } from 'node:stream';
import { NO_TELEMETRY, type Telemetry } from './telemetry.js';
import { PrismError, isPrismError } from '../core/errors.js';
import { newExecId } from '../core/ids.js';
import { limitExceeded, type ExecRecord, type ExecResult } from '../core/types.js';
import { CappedBuffer } from './capped-buffer.js';
import type { Logger } from './logger.js';
import type { NodeAgent } from './node-agent.js';
import { encodeOutput } from './output-encoding.js';
import type { SandboxRepo } from './sandbox-repo.js';
import type { SandboxRef, SandboxService } from './sandbox-service.js';

export interface ExecRequest {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  timeoutSec?: number;
  stdin?: Buffer;
  /** Leave stdin open after `stdin` was written, for {@link ExecSession.stdin} (background processes). */
  keepStdinOpen?: boolean;
  /** Run as the sandbox's root instead of its user. */
  asRoot?: boolean;
  /**
   * Run on a new terminal of this size (ExecOptions.tty): stdout carries the terminal's bytes, stdin
   * (kept open) its input; the session can be resized.
   */
  tty?: { cols: number; rows: number };
}

/**
 * Where a command's output goes. A sink that cannot keep up returns false; the command's output is
 * then paused (and the command blocks on a full pipe) until `drained` resolves, so a slow client
 * cannot make the daemon buffer without bound.
 */
export interface ExecSink {
  stdout(chunk: Buffer): unknown;
  stderr(chunk: Buffer): unknown;
  drained?(): Promise<void>;
}

export interface ExecSession {
  id: string;
  /** Resolves with the result once the command exited and all output went to the sink. */
  done: Promise<ExecResult>;
  /** Kills the command (e.g. the client went away). */
  cancel(): void;
  /** Sends a signal to the command's process group. */
  signal(sig: NodeJS.Signals): void;
  /** The command's stdin while it is open (only with `keepStdinOpen`), else null. */
  stdin: Writable | null;
  /** Present for commands on a terminal (`tty`): sets its size. */
  resize?: (cols: number, rows: number) => void;
}

export interface ExecLimits {
  /** Bytes of each stream kept in the exec record for `logs` (the live stream is never cut). */
  recordBytes: number;
  /** Exec records kept per sandbox. */
  recordsPerSandbox: number;
  maxTimeoutSec: number;
}

/** Runs commands in sandboxes, enforces exec timeouts, and keeps exec records for `logs`. */
export class ExecService {
  constructor(
    private readonly sandboxes: SandboxService,
    private readonly agent: NodeAgent,
    private readonly repo: SandboxRepo,
    private readonly limits: ExecLimits,
    private readonly log: Logger,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {}

  async exec(idOrName: SandboxRef, req: ExecRequest, sink: ExecSink): Promise<ExecSession> {
    if (req.argv.length === 0 || req.argv[0] === '') throw new PrismError('INVALID_ARGUMENT', 'the command is empty');
    if (req.timeoutSec !== undefined && (req.timeoutSec <= 0 || req.timeoutSec > this.limits.maxTimeoutSec)) {
      throw new PrismError('INVALID_ARGUMENT', `timeoutSec must be between 0 and ${this.limits.maxTimeoutSec}`);
    }
    if (req.cwd !== undefined && req.cwd !== '' && !req.cwd.startsWith('/')) {
      throw new PrismError('INVALID_ARGUMENT', `cwd must be an absolute path, got '${req.cwd}'`);
    }
    const sb = await this.sandboxes.active(idOrName, 'start it before running commands');
    const id = newExecId();
    const startedAt = new Date();
    const t0 = performance.now();
    let proc;
    try {
      proc = await this.agent.exec(sb, { argv: req.argv, env: req.env ?? {}, cwd: req.cwd, stdin: req.stdin !== undefined || !!req.keepStdinOpen || !!req.tty, asRoot: !!req.asRoot, ...(req.tty ? { tty: req.tty } : {}) });
    } catch (e) {
      // A task that died under a running sandbox: say so now rather than at the next watchdog round.
      if (isPrismError(e, 'FAILED_PRECONDITION') && !(await this.agent.checkTask(sb.id))) {
        throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is failed: its task ended unexpectedly`, { cause: e });
      }
      throw e;
    }
    if (proc.stdin) {
      proc.stdin.on('error', () => undefined); // the command may exit without reading its stdin
      if (!req.keepStdinOpen) proc.stdin.end(req.stdin);
      else if (req.stdin?.length) proc.stdin.write(req.stdin);
    }
    const out = new CappedBuffer(this.limits.recordBytes);
    const err = new CappedBuffer(this.limits.recordBytes);
    let paused = false;
    const slowDown = (ok: unknown) => {
      if (ok !== false || !sink.drained || paused) return;
      paused = true;
      proc.stdout.pause();
      proc.stderr.pause();
      void sink.drained().finally(() => {
        paused = false;
        proc.stdout.resume();
        proc.stderr.resume();
      });
    };
    proc.stdout.on('data', (b: Buffer) => {
      out.push(b);
      slowDown(sink.stdout(b));
    });
    proc.stderr.on('data', (b: Buffer) => {
      err.push(b);
      slowDown(sink.stderr(b));
    });
    let timedOut = false;
    const timer = req.timeoutSec
      ? setTimeout(() => {
          timedOut = true;
          proc.kill('SIGKILL');
        }, req.timeoutSec * 1000)
      : undefined;
    const done = proc.result.then(async (r) => {
      clearTimeout(timer);
      const result: ExecResult = { ...r, timedOut, durationMs: Math.round(performance.now() - t0) };
      this.telemetry.observeExec(sb.runtime, (performance.now() - t0) / 1000);
      const limit = limitExceeded(result);
      if (limit) result.limitExceeded = limit;
      const stdout = out.bytes();
      const stderr = err.bytes();
      const enc = encodeOutput(stdout, stderr);
      const rec: ExecRecord = {
        ...result,
        id,
        sandboxId: sb.id,
        cmd: req.argv,
        startedAt: startedAt.toISOString(),
        stdout: enc.stdout,
        stderr: enc.stderr,
        encoding: enc.encoding,
        truncated: out.truncated || err.truncated,
      };
      await this.repo
        .appendExec(rec, this.limits.recordsPerSandbox)
        .catch((e) => this.log.warn({ err: e, sandbox: sb.id }, 'could not store the exec record'));
      return result;
    });
    done.catch(() => clearTimeout(timer));
    const session: ExecSession = { id, done, cancel: () => proc.kill('SIGKILL'), signal: (sig) => proc.kill(sig), stdin: req.keepStdinOpen ? proc.stdin : null };
    if (proc.resize) session.resize = proc.resize.bind(proc);
    return session;
  }

  async logs(idOrName: string): Promise<ExecRecord[]> {
    const sb = await this.sandboxes.get(idOrName);
    // Records written before diskFull existed lack it.
    return (await this.repo.listExecs(sb.id)).map((r) => ({ ...r, diskFull: r.diskFull ?? false }));
  }
}
