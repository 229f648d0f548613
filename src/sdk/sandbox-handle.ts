import type { Sandbox } from '../core/types.js';
import { PrismApiError } from './errors.js';
import { SandboxFiles } from './files.js';

/**
 * What a handle needs from the client: JSON calls and raw streaming calls, both already mapping
 * non-2xx answers and connection failures to {@link PrismApiError}. Kept as an interface so this file
 * does not import the client (which imports this file).
 */
export interface ApiTransport {
  readonly baseUrl: string;
  /** Resolves to the parsed body, or undefined for 204. */
  json<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T>;
  /** Resolves to a 2xx response whose body the caller reads. */
  raw(method: string, path: string, body: unknown, accept: string, signal?: AbortSignal): Promise<Response>;
  /** Sends a raw (non-JSON) body, e.g. an image archive; resolves to the parsed JSON answer. */
  upload<T>(method: string, path: string, body: Uint8Array | ReadableStream<Uint8Array>, contentType: string, signal?: AbortSignal): Promise<T>;
}

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  timeoutSec?: number;
  /** Fed to the command's stdin; a string is sent as UTF-8, bytes as base64. */
  stdin?: string | Uint8Array;
  /** Given either callback, exec uses the NDJSON stream and calls them as output arrives, in order. */
  onStdout?: (chunk: Uint8Array) => void;
  onStderr?: (chunk: Uint8Array) => void;
  signal?: AbortSignal;
}

export interface ExecResult {
  /** The execution's id; absent when the result came from the stream (its exit event carries none). */
  id?: string;
  exitCode: number;
  /** Signal name when the process was killed by one, e.g. `SIGKILL`. */
  signal?: string;
  timedOut: boolean;
  oomKilled: boolean;
  durationMs: number;
  /** The exact bytes the command wrote. */
  stdout: Uint8Array;
  stderr: Uint8Array;
  /** stdout decoded as UTF-8. */
  text(): string;
}

/** One past execution as returned by `logs()`. */
export interface ExecLogEntry extends ExecResult {
  id: string;
  cmd: string[];
  startedAt: string;
  /** True when the daemon stored only the start of the output. */
  truncated: boolean;
}

interface WireExecResult {
  id?: string;
  exitCode: number;
  signal?: string;
  timedOut: boolean;
  oomKilled: boolean;
  durationMs: number;
  stdout?: string;
  stderr?: string;
  encoding?: 'utf8' | 'base64';
}

type WireExecRecord = WireExecResult & { id: string; cmd: string[]; startedAt: string; truncated: boolean };

/** A sandbox plus the calls that act on it. `info` is the last record the API returned. */
export class SandboxHandle {
  readonly #api: ApiTransport;
  #info: Sandbox;
  /** The sandbox's filesystem: read, write, list, archives (./files.ts). */
  readonly files: SandboxFiles;

  constructor(api: ApiTransport, info: Sandbox) {
    this.#api = api;
    this.#info = info;
    this.files = new SandboxFiles(api, () => this.#path());
  }

  get info(): Sandbox {
    return this.#info;
  }
  get id(): string {
    return this.#info.id;
  }
  get name(): string {
    return this.#info.name;
  }
  get status(): Sandbox['status'] {
    return this.#info.status;
  }

  /** `JSON.stringify(handle)` gives the sandbox record, as the API sent it. */
  toJSON(): Sandbox {
    return this.#info;
  }

  /** Runs a command: a string through the sandbox's shell, an array as argv without a shell. */
  async exec(cmd: string | string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const body: Record<string, unknown> = typeof cmd === 'string' ? { command: cmd } : { cmd };
    if (opts.env !== undefined) body.env = opts.env;
    if (opts.cwd !== undefined) body.cwd = opts.cwd;
    if (opts.timeoutSec !== undefined) body.timeoutSec = opts.timeoutSec;
    if (typeof opts.stdin === 'string') {
      body.stdin = opts.stdin;
      body.stdinEncoding = 'utf8';
    } else if (opts.stdin !== undefined) {
      body.stdin = toBase64(opts.stdin);
      body.stdinEncoding = 'base64';
    }
    const path = `${this.#path()}/exec`;
    if (!opts.onStdout && !opts.onStderr) {
      return fromWire(await this.#api.json<WireExecResult>('POST', path, body, opts.signal));
    }
    const res = await this.#api.raw('POST', path, body, 'application/x-ndjson, application/json', opts.signal);
    return readExecStream(res, opts);
  }

  /** Past executions in this sandbox, oldest first. */
  async logs(opts: { signal?: AbortSignal } = {}): Promise<ExecLogEntry[]> {
    const out = await this.#api.json<{ executions: WireExecRecord[] }>('GET', `${this.#path()}/logs`, undefined, opts.signal);
    return out.executions.map((r) => ({
      ...fromWire(r),
      id: r.id,
      cmd: r.cmd,
      startedAt: r.startedAt,
      truncated: r.truncated,
    }));
  }

  async stop(): Promise<this> {
    this.#info = await this.#api.json<Sandbox>('POST', `${this.#path()}/stop`);
    return this;
  }

  async start(): Promise<this> {
    this.#info = await this.#api.json<Sandbox>('POST', `${this.#path()}/start`);
    return this;
  }

  async delete(): Promise<void> {
    await this.#api.json<void>('DELETE', this.#path());
  }

  async refresh(): Promise<this> {
    this.#info = await this.#api.json<Sandbox>('GET', this.#path());
    return this;
  }

  // By id, not name: a name can be reused after a delete, an id cannot.
  #path(): string {
    return `/sandboxes/${encodeURIComponent(this.#info.id)}`;
  }
}

function fromWire(w: WireExecResult): ExecResult {
  return makeResult(w, decodeOutput(w.stdout ?? '', w.encoding), decodeOutput(w.stderr ?? '', w.encoding));
}

function makeResult(w: Omit<WireExecResult, 'stdout' | 'stderr' | 'encoding'>, stdout: Uint8Array, stderr: Uint8Array): ExecResult {
  const result: ExecResult = {
    exitCode: w.exitCode,
    timedOut: w.timedOut,
    oomKilled: w.oomKilled,
    durationMs: w.durationMs,
    stdout,
    stderr,
    text: () => new TextDecoder().decode(stdout),
  };
  if (w.id !== undefined) result.id = w.id;
  if (w.signal !== undefined) result.signal = w.signal;
  return result;
}

async function readExecStream(res: Response, opts: ExecOptions): Promise<ExecResult> {
  // A server that ignores Accept answers with the plain result; deliver it through the callbacks all at once.
  const type = res.headers.get('content-type') ?? '';
  if (type.includes('application/json')) {
    const result = fromWire((await res.json()) as WireExecResult);
    if (result.stdout.length > 0) opts.onStdout?.(result.stdout);
    if (result.stderr.length > 0) opts.onStderr?.(result.stderr);
    return result;
  }
  const stdout: Uint8Array[] = [];
  const stderr: Uint8Array[] = [];
  for await (const event of readNdjson(res, opts.signal)) {
    const ev = event as Record<string, unknown>;
    if (ev.type === 'stdout' || ev.type === 'stderr') {
      const bytes = decodeOutput(String(ev.data ?? ''), ev.encoding as string | undefined);
      (ev.type === 'stdout' ? stdout : stderr).push(bytes);
      (ev.type === 'stdout' ? opts.onStdout : opts.onStderr)?.(bytes);
    } else if (ev.type === 'exit') {
      return makeResult(ev as unknown as WireExecResult, concat(stdout), concat(stderr));
    } else if (ev.type === 'error') {
      // Not in docs/api.md: how a failure after the 200 is reported. Accept both plausible shapes.
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

/**
 * Splits the body into JSON values, one per line. Lines are cut on the newline byte before decoding, so
 * a line (or a multi-byte character) split across network chunks is reassembled first.
 */
export async function* readNdjson(res: Response, signal?: AbortSignal): AsyncGenerator<unknown> {
  if (!res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let pending: Uint8Array[] = [];
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (signal?.aborted) throw e;
        throw new PrismApiError('UNAVAILABLE', `exec stream broke: ${(e as Error).message}`, { retryable: false, cause: e });
      }
      if (chunk.done) break;
      let bytes = chunk.value;
      for (let nl = bytes.indexOf(0x0a); nl !== -1; nl = bytes.indexOf(0x0a)) {
        pending.push(bytes.subarray(0, nl));
        const line = parseLine(decoder.decode(concat(pending)));
        pending = [];
        if (line !== undefined) yield line;
        bytes = bytes.subarray(nl + 1);
      }
      if (bytes.length > 0) pending.push(bytes);
    }
    const last = parseLine(decoder.decode(concat(pending)));
    if (last !== undefined) yield last;
  } finally {
    reader.releaseLock();
  }
}

function parseLine(line: string): unknown {
  if (line.trim() === '') return undefined;
  try {
    return JSON.parse(line);
  } catch (e) {
    throw new PrismApiError('INTERNAL', `invalid NDJSON line from the API: ${line.slice(0, 200)}`, { cause: e });
  }
}

/** Output bytes per docs/api.md "Output encoding": base64 of the exact bytes, else the UTF-8 text. */
export function decodeOutput(data: string, encoding: string | undefined): Uint8Array {
  if (encoding !== 'base64') return new TextEncoder().encode(data);
  const bin = atob(data);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(bytes: Uint8Array): string {
  let bin = '';
  // Chunked: String.fromCharCode(...bytes) overflows the call stack on large inputs.
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
