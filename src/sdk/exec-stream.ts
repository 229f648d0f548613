import type { ExecResultWire } from '../core/wire.js';
import { PrismApiError } from './errors.js';
import { decodeOutput, readNdjson, toBase64 } from './wire.js';

/**
 * How a command ended, as the exec stream's last event says (the output came in the events before):
 * the API's exec result (src/core/wire.ts) without its output. `id` is absent from servers that do
 * not send it; `limitExceeded` names the limit (`TIMEOUT`, `OOM_KILLED`, `DISK_FULL`) that ended or
 * hurt the command.
 */
export type ExecExit = Omit<ExecResultWire, 'id' | 'stdout' | 'stderr' | 'encoding' | 'truncated'> & { id?: string };

/** One event of a command's output stream, in the order the daemon sent them; `exit` comes last. */
export type ExecEvent = { type: 'stdout' | 'stderr'; data: Uint8Array } | { type: 'exit'; exit: ExecExit };

/** The exit fields of a wire result or exit event, leaving out output and encoding. */
export function exitOf(w: Record<string, unknown>): ExecExit {
  const e: ExecExit = {
    exitCode: w.exitCode as number,
    timedOut: w.timedOut as boolean,
    oomKilled: w.oomKilled as boolean,
    diskFull: w.diskFull === true,
    durationMs: w.durationMs as number,
  };
  if (typeof w.id === 'string') e.id = w.id;
  if (typeof w.signal === 'string') e.signal = w.signal;
  if (typeof w.limitExceeded === 'string') e.limitExceeded = w.limitExceeded as ExecExit['limitExceeded'];
  return e;
}

/**
 * The events of an exec answer: NDJSON as docs/api.md describes, or a plain JSON result from a server
 * that ignored the Accept header (then all output comes at once). Throws PrismApiError for an `error`
 * event, and UNAVAILABLE (not retryable: the command may have run) when the stream ends without `exit`.
 */
export async function* execEvents(res: Response, signal?: AbortSignal): AsyncGenerator<ExecEvent> {
  if ((res.headers.get('content-type') ?? '').includes('application/json')) {
    const w = (await res.json()) as Record<string, unknown>;
    const stdout = decodeOutput(String(w.stdout ?? ''), w.encoding as string | undefined);
    const stderr = decodeOutput(String(w.stderr ?? ''), w.encoding as string | undefined);
    if (stdout.length > 0) yield { type: 'stdout', data: stdout };
    if (stderr.length > 0) yield { type: 'stderr', data: stderr };
    yield { type: 'exit', exit: exitOf(w) };
    return;
  }
  for await (const event of readNdjson(res, signal)) {
    const ev = event as Record<string, unknown>;
    if (ev.type === 'stdout' || ev.type === 'stderr') {
      yield { type: ev.type, data: decodeOutput(String(ev.data ?? ''), ev.encoding as string | undefined) };
    } else if (ev.type === 'exit') {
      yield { type: 'exit', exit: exitOf(ev) };
      return;
    } else if (ev.type === 'error') {
      const err = (ev.error ?? ev) as { code?: unknown; message?: unknown };
      throw new PrismApiError(String(err.code ?? 'INTERNAL'), String(err.message ?? 'exec failed'), { status: res.status });
    }
  }
  // The command may still be running or may have finished: repeating it is not safe.
  throw new PrismApiError('UNAVAILABLE', 'exec stream ended before the exit event; the outcome is unknown', {
    status: res.status,
    retryable: false,
  });
}

/** Gives up the rest of a streamed answer: the daemon sees the client go and ends what it streamed. */
export async function cancelBody(res: Response): Promise<void> {
  if (res.body && !res.body.locked) await res.body.cancel().catch(() => undefined);
}

/** What exec and background starts send: the command and its options (docs/api.md, exec body). */
export interface ExecRequestOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Kill the command after this many seconds (the result says `timedOut`). */
  timeoutSec?: number;
  /** The same in milliseconds; give one or the other. */
  timeoutMs?: number;
  /** Fed to the command's stdin; a string is sent as UTF-8, bytes as base64. */
  stdin?: string | Uint8Array;
  /** `root`: run as the sandbox's root instead of its user. */
  user?: 'root';
}

export function execRequestBody(cmd: string | string[], opts: ExecRequestOptions): Record<string, unknown> {
  const body: Record<string, unknown> = typeof cmd === 'string' ? { command: cmd } : { cmd };
  if (opts.env !== undefined) body.env = opts.env;
  if (opts.cwd !== undefined) body.cwd = opts.cwd;
  if (opts.user !== undefined) body.user = opts.user;
  if (opts.timeoutSec !== undefined && opts.timeoutMs !== undefined) {
    throw new PrismApiError('INVALID_ARGUMENT', 'give timeoutSec or timeoutMs, not both');
  }
  // The daemon enforces the timeout (killing the command's whole tree) and reports TIMEOUT in the result.
  if (opts.timeoutMs !== undefined) body.timeoutSec = opts.timeoutMs / 1000;
  if (opts.timeoutSec !== undefined) body.timeoutSec = opts.timeoutSec;
  if (typeof opts.stdin === 'string') {
    body.stdin = opts.stdin;
    body.stdinEncoding = 'utf8';
  } else if (opts.stdin !== undefined) {
    body.stdin = toBase64(opts.stdin);
    body.stdinEncoding = 'base64';
  }
  return body;
}
