import { InvalidArgumentError, type Command } from 'commander';
import { Prism, PrismApiError } from '../sdk/index.js';
import { connectionFromEnv } from '../sdk/config.js';

/** Where the CLI reads and writes; `process` in real use, in-memory streams in tests. */
export interface CliIo {
  stdout: { write(chunk: string | Uint8Array): unknown };
  stderr: { write(chunk: string | Uint8Array): unknown };
  stdin: AsyncIterable<Uint8Array | string> & { isTTY?: boolean };
  env: Record<string, string | undefined>;
  /** Present when stdin and stdout are a terminal: raw mode, its size and size changes (`sandbox shell`). */
  terminal?: {
    setRaw(on: boolean): void;
    size(): { cols: number; rows: number };
    /** Calls `cb` on every window size change; returns the function that stops it. */
    onResize(cb: () => void): () => void;
  };
}

export type OutputFormat = 'table' | 'json';

/** A mistake in how the command was called; exits 2 like commander's own usage errors. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export { DEFAULT_API } from '../sdk/config.js';

/** Shared by every command of one `main()` run. Commands set `exitCode` when it is not 0. */
export class CliContext {
  exitCode = 0;

  constructor(readonly io: CliIo) {}

  /**
   * The daemon and token: `--api`/`--token`, else PRISM_API/PRISM_TOKEN, else the config file that
   * `prismctl login` wrote. The saved token is only ever sent to the saved address.
   */
  client(cmd: Command): Prism {
    const o = cmd.optsWithGlobals<{ api?: string; token?: string; ca?: string }>();
    try {
      return new Prism(connectionFromEnv(this.io.env, { api: o.api, token: o.token, caFile: o.ca }));
    } catch (e) {
      if (e instanceof PrismApiError) throw e;
      throw new UsageError((e as Error).message);
    }
  }

  format(cmd: Command): OutputFormat {
    return cmd.optsWithGlobals<{ output?: OutputFormat }>().output ?? 'table';
  }

  out(text: string): void {
    this.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  json(value: unknown): void {
    this.io.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }
}

/** Collects a repeatable option into a list (commander calls this once per occurrence). */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `K=V` pairs into an object; the value may itself contain `=`. */
export function parseEnvPairs(pairs: string[] | undefined, flag = '--env'): Record<string, string> | undefined {
  if (!pairs || pairs.length === 0) return undefined;
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`${flag} expects KEY=VALUE, got '${pair}'`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** Option parser for counts and sizes; commander reports the failure with the option's name. */
export function parseNumber(kind: 'int' | 'float') {
  const pattern = kind === 'int' ? /^\d+$/ : /^(\d+(\.\d*)?|\.\d+)$/;
  return (value: string): number => {
    if (!pattern.test(value.trim())) {
      throw new InvalidArgumentError(`expected a non-negative ${kind === 'int' ? 'integer' : 'number'}.`);
    }
    return Number(value);
  };
}

/**
 * The one error format of the CLI: `error: <message> (<CODE>)`, never a stack trace. Connection failures
 * get a hint, since a daemon that is not running (or a wrong --api) is the usual cause.
 */
export function printError(io: CliIo, e: unknown): void {
  if (e instanceof PrismApiError) {
    io.stderr.write(`error: ${e.message} (${e.code})\n`);
    if (e.code === 'UNAVAILABLE' && e.status === 0) {
      io.stderr.write('hint: is prismd running? Point prismctl at it with --api HOST:PORT or PRISM_API.\n');
    }
    if (e.code === 'UNAUTHENTICATED') {
      io.stderr.write("hint: give a token with --token or PRISM_TOKEN, or save one with 'prismctl login' (the admin token is in the data dir's admin-token file).\n");
    }
    return;
  }
  io.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  if (io.env.PRISM_DEBUG && e instanceof Error && e.stack) io.stderr.write(`${e.stack}\n`);
}
