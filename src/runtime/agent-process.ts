import type { PassThrough, Writable } from 'node:stream';
import type { TaskProcess } from './driver.js';

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
}

/** The driver-facing process: the agent's streams and kill, with the result the driver completed. */
export function toTaskProcess(proc: AgentProcess, result: TaskProcess['result']): TaskProcess {
  return { stdin: proc.stdin, stdout: proc.stdout, stderr: proc.stderr, result, kill: (signal: NodeJS.Signals = 'SIGKILL') => proc.kill(signal) };
}
