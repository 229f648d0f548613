import type { PassThrough, Writable } from 'node:stream';

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
