import type { Sandbox, Snapshot } from '../core/types.js';
import type { ExecResultWire, SandboxMetricWire } from '../core/wire.js';
import { PrismApiError } from './errors.js';
import { openPty, type Pty, type PtyOptions, type SocketDialer } from './pty.js';
import { cancelBody, execEvents, execRequestBody, exitOf, type ExecEvent, type ExecExit, type ExecRequestOptions } from './exec-stream.js';
import { ProcessesApi, type ProcessHandle, type StartProcessOptions } from './processes.js';
import { concat, decodeOutput } from './wire.js';

export { decodeOutput, readNdjson } from './wire.js';
import { SandboxFiles } from './files.js';

/**
 * What a handle needs from the client: JSON calls and raw streaming calls, both already mapping
 * non-2xx answers and connection failures to {@link PrismApiError}. Kept as an interface so this file
 * does not import the client (which imports this file).
 */
export interface ApiTransport extends SocketDialer {
  readonly baseUrl: string;
  /** Resolves to the parsed body, or undefined for 204. */
  json<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T>;
  /** Resolves to a 2xx response whose body the caller reads. */
  raw(method: string, path: string, body: unknown, accept: string, signal?: AbortSignal): Promise<Response>;
  /** Sends a raw (non-JSON) body, e.g. an image archive; resolves to the parsed JSON answer. */
  upload<T>(method: string, path: string, body: Uint8Array | ReadableStream<Uint8Array>, contentType: string, signal?: AbortSignal): Promise<T>;
}

export interface ExecOptions extends ExecRequestOptions {
  /** Given either callback, exec uses the NDJSON stream and calls them as output arrives, in order. */
  onStdout?: (chunk: Uint8Array) => void;
  onStderr?: (chunk: Uint8Array) => void;
  /** Aborting ends the request, and the daemon kills the command when its client goes away. */
  signal?: AbortSignal;
}

/** A finished command: how it ended (as the stream's exit event says) and all it wrote. */
export interface ExecResult extends ExecExit {
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

/** One usage sample of `metrics()`. */
export type SandboxMetric = SandboxMetricWire;

/** Older servers leave out `id` and `diskFull`; streamed results have no output fields. */
type WireExecResult = Omit<ExecResultWire, 'id' | 'diskFull' | 'stdout' | 'stderr' | 'encoding'> & Partial<Pick<ExecResultWire, 'id' | 'diskFull' | 'stdout' | 'stderr' | 'encoding'>>;

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

  /** Background processes of this sandbox (docs/api.md, "Background processes"). */
  get processes(): ProcessesApi {
    return new ProcessesApi(this.#api, this.#path());
  }

  /**
   * Runs a command: a string through the sandbox's shell, an array as argv without a shell. With
   * `background: true` it starts a background process and resolves to its handle at once.
   */
  exec(cmd: string | string[], opts: StartProcessOptions & { background: true }): Promise<ProcessHandle>;
  exec(cmd: string | string[], opts?: ExecOptions & { background?: false }): Promise<ExecResult>;
  async exec(cmd: string | string[], opts: (ExecOptions & { background?: boolean }) = {}): Promise<ExecResult | ProcessHandle> {
    if (opts.background) return this.processes.start(cmd, opts);
    const body = execRequestBody(cmd, opts);
    const path = `${this.#path()}/exec`;
    if (!opts.onStdout && !opts.onStderr) {
      return fromWire(await this.#api.json<WireExecResult>('POST', path, body, opts.signal));
    }
    const res = await this.#api.raw('POST', path, body, 'application/x-ndjson, application/json', opts.signal);
    return readExecStream(res, opts);
  }

  /**
   * Opens an interactive terminal running `cmd` (default: the user's login shell). Output arrives in
   * `onData`; `write` sends keystrokes, `resize` the window size, `wait()` the exit. Closing it, or
   * losing the connection, kills the command and everything it started.
   */
  pty(opts: PtyOptions): Promise<Pty> {
    return openPty(this.#api, `${this.#path()}/pty`, opts);
  }

  /**
   * Runs a command and yields its output as it comes, then an `exit` event:
   * `for await (const ev of sb.execStream(cmd)) ...`. Leaving the loop early (or aborting `signal`)
   * kills the command.
   */
  async *execStream(cmd: string | string[], opts: Omit<ExecOptions, 'onStdout' | 'onStderr'> = {}): AsyncGenerator<ExecEvent> {
    const res = await this.#api.raw('POST', `${this.#path()}/exec`, execRequestBody(cmd, opts), 'application/x-ndjson, application/json', opts.signal);
    try {
      yield* execEvents(res, opts.signal);
    } finally {
      await cancelBody(res);
    }
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

  /**
   * Usage samples of the sandbox (CPU, memory, disk), oldest first, taken every few seconds by the node
   * that runs it; `start`/`end` bound them. A running sandbox's newest sample is at most one interval old.
   */
  async metrics(opts: { start?: Date; end?: Date; signal?: AbortSignal } = {}): Promise<SandboxMetric[]> {
    const q = new URLSearchParams();
    if (opts.start) q.set('start', opts.start.toISOString());
    if (opts.end) q.set('end', opts.end.toISOString());
    const qs = q.toString() ? `?${q}` : '';
    return (await this.#api.json<{ metrics: SandboxMetric[] }>('GET', `${this.#path()}/metrics${qs}`, undefined, opts.signal)).metrics;
  }

  async stop(): Promise<this> {
    this.#info = await this.#api.json<Sandbox>('POST', `${this.#path()}/stop`);
    return this;
  }

  async start(): Promise<this> {
    this.#info = await this.#api.json<Sandbox>('POST', `${this.#path()}/start`);
    return this;
  }

  /** Freezes every process, keeping memory (in RAM on oci/docker, on disk on microvm); UNIMPLEMENTED where the runtime cannot. */
  async pause(): Promise<this> {
    this.#info = await this.#api.json<Sandbox>('POST', `${this.#path()}/pause`);
    return this;
  }

  /** Thaws a paused sandbox: its processes continue where they were. */
  async resume(): Promise<this> {
    this.#info = await this.#api.json<Sandbox>('POST', `${this.#path()}/resume`);
    return this;
  }

  /** The sandbox's files now, as a snapshot new sandboxes can be created from (a running one is frozen meanwhile). */
  snapshot(opts: { name?: string } = {}): Promise<Snapshot> {
    return this.#api.json<Snapshot>('POST', `${this.#path()}/snapshots`, opts);
  }

  /**
   * `count` new sandboxes with this one's files, resources, environment and network (one snapshot,
   * then creates from it). `memory` says whether they got its running processes too (not yet: false).
   */
  async fork(count = 1): Promise<{ sandboxes: SandboxHandle[]; snapshot: Snapshot; memory: boolean }> {
    const r = await this.#api.json<{ sandboxes: Sandbox[]; snapshot: Snapshot; memory: boolean }>('POST', `${this.#path()}/fork`, { count });
    return { sandboxes: r.sandboxes.map((s) => new SandboxHandle(this.#api, s)), snapshot: r.snapshot, memory: r.memory };
  }

  async delete(): Promise<void> {
    await this.#api.json<void>('DELETE', this.#path());
  }

  /** The sandbox's timeout ends `timeoutSec` from now (0: never); what then happens is its `onTimeout`. */
  async setTimeout(timeoutSec: number): Promise<this> {
    this.#info = await this.#api.json<Sandbox>('POST', `${this.#path()}/timeout`, { timeoutSec });
    return this;
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
  return { ...exitOf(w as unknown as Record<string, unknown>), stdout, stderr, text: () => new TextDecoder().decode(stdout) };
}

async function readExecStream(res: Response, opts: ExecOptions): Promise<ExecResult> {
  const stdout: Uint8Array[] = [];
  const stderr: Uint8Array[] = [];
  for await (const ev of execEvents(res, opts.signal)) {
    if (ev.type === 'exit') return makeResult(ev.exit, concat(stdout), concat(stderr));
    (ev.type === 'stdout' ? stdout : stderr).push(ev.data);
    (ev.type === 'stdout' ? opts.onStdout : opts.onStderr)?.(ev.data);
  }
  throw new PrismApiError('INTERNAL', 'exec stream ended without an exit event');
}
