import type { ProcessInfo, ProcessSignal } from '../core/types.js';
import { PrismApiError } from './errors.js';
import { cancelBody, execRequestBody, type ExecRequestOptions } from './exec-stream.js';
import type { ApiTransport } from './sandbox-handle.js';
import { decodeOutput, readNdjson, toBase64 } from './wire.js';

export type { ProcessInfo, ProcessSignal };

export interface StartProcessOptions extends ExecRequestOptions {
  /** Aborts the start request (a process that already started keeps running). */
  signal?: AbortSignal;
}

/** Absolute byte offsets into a process's stdout and stderr. */
export interface Offsets {
  stdout: number;
  stderr: number;
}

/**
 * Where a read starts: a number for both streams (0: from the start), or per stream. Left out, a
 * handle continues where its previous `output()` or `stream()` ended.
 */
export type Since = number | Partial<Offsets>;

export interface ProcessOutput {
  stdout: Uint8Array;
  stderr: Uint8Array;
  /** Where the next read continues. */
  next: Offsets;
  /** Bytes before this output that the daemon no longer held (its buffer keeps the last few MiB). */
  dropped: Offsets;
  /** The process as of this read: when it says `exited`, this read had all the output there is. */
  process: ProcessInfo;
  /** stdout decoded as UTF-8. */
  text(): string;
}

export type ProcessEvent =
  | { type: 'stdout' | 'stderr'; data: Uint8Array; offset: number; dropped: number }
  | { type: 'exit'; process: ProcessInfo; next: Offsets };

/** Longest single wait request; longer waits are several requests (the daemon allows 300 s each). */
const WAIT_SLICE_MS = 60_000;

/** A background process in a sandbox: its output, stdin, signals and exit. `info` is the last state seen. */
export class ProcessHandle {
  readonly #api: ApiTransport;
  readonly #base: string;
  #info: ProcessInfo;
  #cursor: Offsets = { stdout: 0, stderr: 0 };

  constructor(api: ApiTransport, sandboxPath: string, info: ProcessInfo) {
    this.#api = api;
    this.#info = info;
    this.#base = `${sandboxPath}/processes/${encodeURIComponent(info.id)}`;
  }

  get id(): string {
    return this.#info.id;
  }
  get info(): ProcessInfo {
    return this.#info;
  }
  get status(): ProcessInfo['status'] {
    return this.#info.status;
  }

  toJSON(): ProcessInfo {
    return this.#info;
  }

  async refresh(): Promise<ProcessInfo> {
    return (this.#info = await this.#api.json<ProcessInfo>('GET', this.#base));
  }

  #from(since: Since | undefined): Offsets {
    if (since === undefined) return { ...this.#cursor };
    if (typeof since === 'number') return { stdout: since, stderr: since };
    return { stdout: since.stdout ?? this.#cursor.stdout, stderr: since.stderr ?? this.#cursor.stderr };
  }

  /** Output written since `since` (default: where this handle's last read ended). */
  async output(opts: { since?: Since; signal?: AbortSignal } = {}): Promise<ProcessOutput> {
    const at = this.#from(opts.since);
    const w = await this.#api.json<WireOutput>('GET', `${this.#base}/output?stdoutOffset=${at.stdout}&stderrOffset=${at.stderr}`, undefined, opts.signal);
    this.#info = w.process;
    this.#cursor = { stdout: w.stdoutOffset, stderr: w.stderrOffset };
    const stdout = decodeOutput(w.stdout, w.encoding);
    return {
      stdout,
      stderr: decodeOutput(w.stderr, w.encoding),
      next: { ...this.#cursor },
      dropped: { stdout: w.stdoutDropped, stderr: w.stderrDropped },
      process: w.process,
      text: () => new TextDecoder().decode(stdout),
    };
  }

  /**
   * Output as it is written, from `since`, until the process exits (an `exit` event last). Leaving
   * the loop early (or aborting) ends the stream, not the process.
   */
  async *stream(opts: { since?: Since; signal?: AbortSignal } = {}): AsyncGenerator<ProcessEvent> {
    const at = this.#from(opts.since);
    const res = await this.#api.raw('GET', `${this.#base}/output?follow=true&stdoutOffset=${at.stdout}&stderrOffset=${at.stderr}`, undefined, 'application/x-ndjson', opts.signal);
    try {
      for await (const raw of readNdjson(res, opts.signal)) {
        const ev = raw as Record<string, unknown>;
        if (ev.type === 'stdout' || ev.type === 'stderr') {
          const data = decodeOutput(String(ev.data ?? ''), ev.encoding as string | undefined);
          const offset = Number(ev.offset);
          this.#cursor[ev.type] = offset + data.length;
          yield { type: ev.type, data, offset, dropped: Number(ev.dropped ?? 0) };
        } else if (ev.type === 'exit') {
          const { type: _t, stdoutOffset, stderrOffset, ...info } = ev;
          this.#info = info as unknown as ProcessInfo;
          yield { type: 'exit', process: this.#info, next: { stdout: Number(stdoutOffset), stderr: Number(stderrOffset) } };
          return;
        } else if (ev.type === 'error') {
          const err = (ev.error ?? {}) as { code?: unknown; message?: unknown };
          throw new PrismApiError(String(err.code ?? 'INTERNAL'), String(err.message ?? 'output stream failed'), { status: res.status });
        }
      }
      throw new PrismApiError('UNAVAILABLE', 'the output stream ended before the process exited; read on with output() or stream()', { status: res.status });
    } finally {
      await cancelBody(res);
    }
  }

  /** Writes to the process's stdin; resolves once the daemon passed it on. */
  async write(data: string | Uint8Array, opts: { signal?: AbortSignal } = {}): Promise<void> {
    const body = typeof data === 'string' ? { data } : { data: toBase64(data), encoding: 'base64' };
    this.#info = await this.#api.json<ProcessInfo>('POST', `${this.#base}/stdin`, body, opts.signal);
  }

  /** Closes stdin: the process reads end-of-file. */
  async closeStdin(): Promise<void> {
    this.#info = await this.#api.json<ProcessInfo>('POST', `${this.#base}/stdin`, { close: true });
  }

  /** Sends a signal to the process's group. FAILED_PRECONDITION when it has exited. */
  async signal(sig: ProcessSignal): Promise<ProcessInfo> {
    return (this.#info = await this.#api.json<ProcessInfo>('POST', `${this.#base}/signal`, { signal: sig }));
  }

  /** SIGKILL; a process that already exited is left as it is. Resolves to its state. */
  async kill(): Promise<ProcessInfo> {
    try {
      return await this.signal('SIGKILL');
    } catch (e) {
      if (e instanceof PrismApiError && e.code === 'FAILED_PRECONDITION') return this.refresh();
      throw e;
    }
  }

  /** Kills the process if it runs and makes the daemon forget it (its output too). */
  async remove(): Promise<void> {
    await this.#api.json<void>('DELETE', this.#base);
  }

  /**
   * Resolves with the process once it exited. Rejects with DEADLINE_EXCEEDED when `timeoutMs` passes
   * first (the process keeps running), or with the signal's reason when `signal` aborts.
   */
  async wait(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ProcessInfo> {
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    for (;;) {
      opts.signal?.throwIfAborted();
      const slice = Math.max(0, Math.min(WAIT_SLICE_MS, deadline - Date.now()));
      this.#info = await this.#api.json<ProcessInfo>('POST', `${this.#base}/wait?timeoutSec=${(slice / 1000).toFixed(3)}`, undefined, opts.signal);
      if (this.#info.status === 'exited') return this.#info;
      if (Date.now() >= deadline) {
        throw new PrismApiError('DEADLINE_EXCEEDED', `process ${this.id} still runs after ${opts.timeoutMs} ms`, { retryable: false });
      }
    }
  }
}

interface WireOutput {
  stdout: string;
  stderr: string;
  encoding: 'utf8' | 'base64';
  stdoutOffset: number;
  stderrOffset: number;
  stdoutDropped: number;
  stderrDropped: number;
  process: ProcessInfo;
}

/** `sandbox.processes`: background processes of one sandbox. */
export class ProcessesApi {
  readonly #api: ApiTransport;
  readonly #path: string;

  constructor(api: ApiTransport, sandboxPath: string) {
    this.#api = api;
    this.#path = sandboxPath;
  }

  /** Starts a command that runs on after this call returns (a string through the shell, an array as argv). */
  async start(cmd: string | string[], opts: StartProcessOptions = {}): Promise<ProcessHandle> {
    const body = { ...execRequestBody(cmd, opts), background: true };
    return new ProcessHandle(this.#api, this.#path, await this.#api.json<ProcessInfo>('POST', `${this.#path}/exec`, body, opts.signal));
  }

  /** Running and recently exited processes, oldest first. */
  async list(): Promise<ProcessHandle[]> {
    const { processes } = await this.#api.json<{ processes: ProcessInfo[] }>('GET', `${this.#path}/processes`);
    return processes.map((p) => new ProcessHandle(this.#api, this.#path, p));
  }

  async get(id: string): Promise<ProcessHandle> {
    return new ProcessHandle(this.#api, this.#path, await this.#api.json<ProcessInfo>('GET', `${this.#path}/processes/${encodeURIComponent(id)}`));
  }
}
