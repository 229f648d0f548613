import type { Readable } from 'node:stream';
import { PrismError, isPrismError } from '../core/errors.js';
import type { NodeAgent } from './node-agent.js';
import type { SandboxService } from './sandbox-service.js';

/** Columns and rows of a terminal: what TIOCSWINSZ holds (u16), at least 1. */
export const TERMINAL_DIM_MAX = 65535;

/**
 * What runs when no command is given: the login shell the image's passwd names for the user
 * commands run as, else bash if the image has it, else /bin/sh; as a login shell (`-l`), so that
 * profiles run as in an ssh session. Written for any POSIX sh, since images differ (busybox, dash).
 * Shells like nologin and false are passed over: they are how an image says "no shell", not a shell.
 */
const LOGIN_SHELL = [
  'u=$(id -u 2>/dev/null) && while IFS=: read -r _n _p i _g _c _h s; do [ "$i" = "$u" ] && l=$s && break; done 2>/dev/null </etc/passwd',
  'case "$l" in */nologin|*/false|"") l= ;; esac',
  '[ -n "$l" ] && [ -x "$l" ] || { command -v bash >/dev/null 2>&1 && l=bash || l=/bin/sh; }',
  'exec "$l" -l',
].join('\n');

export const DEFAULT_SHELL_ARGV = ['/bin/sh', '-c', LOGIN_SHELL];

/** Signals a client may send to a terminal's foreground job. */
export const PTY_SIGNALS = ['SIGINT', 'SIGQUIT', 'SIGTERM', 'SIGHUP', 'SIGKILL', 'SIGTSTP', 'SIGCONT', 'SIGUSR1', 'SIGUSR2'] as const;
export type PtySignal = (typeof PTY_SIGNALS)[number];

export interface PtyRequest {
  cols: number;
  rows: number;
  /** Absent: the user's login shell (DEFAULT_SHELL_ARGV). */
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
}

export interface PtyExit {
  exitCode: number;
  /** Signal name when the command was killed by one. */
  signal?: string;
}

export interface PtySession {
  /** The terminal's output (the command's stdout and stderr, as a terminal mixes them). */
  output: Readable;
  /** Bytes typed at the terminal, through its line discipline (0x03 interrupts the foreground job). */
  write(data: Buffer): void;
  resize(cols: number, rows: number): void;
  /** A signal to the terminal's foreground job; SIGKILL ends the command and everything it started. */
  signal(sig: PtySignal): void;
  /** Ends the session: kills the command's whole process tree. Idempotent. */
  close(): void;
  /** Resolves once the command exited and its output was read from `output`. */
  done: Promise<PtyExit>;
}

export function checkSize(cols: number, rows: number): void {
  for (const n of [cols, rows]) {
    if (!Number.isInteger(n) || n < 1 || n > TERMINAL_DIM_MAX) {
      throw new PrismError('INVALID_ARGUMENT', `cols and rows must be whole numbers from 1 to ${TERMINAL_DIM_MAX}, got ${cols}x${rows}`);
    }
  }
}

/**
 * Interactive terminals in sandboxes: a command on a new pseudo-terminal, which the caller (the
 * WebSocket route) feeds with keystrokes and reads the screen from. Unlike exec there is no timeout
 * and no exec record: a session lasts as long as its client, and its output is a screen, not a result.
 */
export class PtyService {
  constructor(
    private readonly sandboxes: SandboxService,
    private readonly agent: NodeAgent,
  ) {}

  async open(idOrName: string, req: PtyRequest): Promise<PtySession> {
    checkSize(req.cols, req.rows);
    const argv = req.argv ?? DEFAULT_SHELL_ARGV;
    if (argv.length === 0 || argv[0] === '') throw new PrismError('INVALID_ARGUMENT', 'the command is empty');
    if (req.cwd !== undefined && req.cwd !== '' && !req.cwd.startsWith('/')) {
      throw new PrismError('INVALID_ARGUMENT', `cwd must be an absolute path, got '${req.cwd}'`);
    }
    const sb = await this.sandboxes.active(idOrName, 'start it before opening a terminal');
    let proc;
    try {
      proc = await this.agent.exec(sb, { argv, env: req.env ?? {}, cwd: req.cwd, stdin: true, tty: { cols: req.cols, rows: req.rows } });
    } catch (e) {
      if (isPrismError(e, 'FAILED_PRECONDITION') && !(await this.agent.checkTask(sb.id))) {
        throw new PrismError('FAILED_PRECONDITION', `sandbox '${sb.name}' is failed: its task ended unexpectedly`, { cause: e });
      }
      throw e;
    }
    const { stdin, resize } = proc;
    if (!stdin || !resize) {
      proc.kill('SIGKILL');
      throw new PrismError('INTERNAL', `the ${sb.runtime} runtime did not give the command a terminal`);
    }
    stdin.on('error', () => undefined); // the command may be gone while keys are still arriving
    proc.stderr.resume(); // empty on a terminal; drained so it can end
    let over = false;
    const done = proc.result.then((r) => {
      over = true;
      return r.signal ? { exitCode: r.exitCode, signal: r.signal } : { exitCode: r.exitCode };
    });
    return {
      output: proc.stdout,
      write: (data) => {
        if (!over && !stdin.destroyed) stdin.write(data);
      },
      resize: (cols, rows) => {
        checkSize(cols, rows);
        if (!over) resize(cols, rows);
      },
      signal: (sig) => {
        if (!over) proc.kill(sig);
      },
      close: () => {
        if (!over) proc.kill('SIGKILL');
      },
      done,
    };
  }
}
