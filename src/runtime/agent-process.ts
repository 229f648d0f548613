import { PassThrough, type Writable } from 'node:stream';
import type { ExecOptions, TaskProcess } from './driver.js';

/**
 * A command run by an in-task exec agent (prism-init for oci, the guest agent for microvm): what both
 * drivers' agent clients hand back before the driver adds timing and OOM detection.
 */
export interface AgentExit {
  exitCode: number;
  /** Signal name when the command was killed by one. */
  signal?: string;
  /** Set by agents that detect OOM kills themselves (the microVM guest agent). */
  oomKilled?: boolean;
}

export interface AgentProcess {
  stdin: Writable | null;
  stdout: PassThrough;
  stderr: PassThrough;
  /** Resolves when the exit arrived (or the connection dropped) and both output streams were drained. */
  exit: Promise<AgentExit>;
  kill(signal?: NodeJS.Signals): void;
  /** Present for a tty command: sets the terminal's size. */
  resize?(cols: number, rows: number): void;
}

/** The driver-facing process: the agent's streams and kill, with the result the driver completed. */
export function toTaskProcess(proc: AgentProcess, result: TaskProcess['result']): TaskProcess {
  const p: TaskProcess = { stdin: proc.stdin, stdout: proc.stdout, stderr: proc.stderr, result, kill: (signal: NodeJS.Signals = 'SIGKILL') => proc.kill(signal) };
  if (proc.resize) p.resize = proc.resize;
  return p;
}

/** A tty command's environment: TERM as asked, else xterm-256color (what terminals in use emulate). */
export function ttyEnv(opts: ExecOptions): ExecOptions {
  if (!opts.tty || opts.env.TERM !== undefined) return opts;
  return { ...opts, env: { ...opts.env, TERM: 'xterm-256color' } };
}

/**
 * A tty command's stderr: the terminal carries everything on stdout, so this one is over at once
 * (ended and flowing, so that waiting for it to finish never depends on someone reading it).
 */
export function emptyIf(tty: boolean): PassThrough {
  const s = new PassThrough();
  if (tty) s.end().resume();
  return s;
}
