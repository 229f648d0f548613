import type { FileEntry } from '../core/types.js';
import { PrismApiError } from './errors.js';
import type { ApiTransport } from './sandbox-handle.js';

export type { FileEntry, FileType } from '../core/types.js';

export interface FileOptions {
  signal?: AbortSignal;
  /** `root`: act as the sandbox's root instead of its user (e.g. to write under /etc). */
  user?: 'root';
}

/**
 * `sandbox.files`: the sandbox's filesystem (docs/api.md, "Files"). Paths are absolute inside the
 * sandbox; symlinks resolve inside it and never lead out. Operations run as the sandbox's user unless
 * `user: 'root'`, so written files belong to that user. Failures are {@link PrismApiError}s:
 * NOT_FOUND, INVALID_ARGUMENT (bad path, a directory where a file is wanted), PERMISSION_DENIED,
 * RESOURCE_EXHAUSTED (sandbox disk full), PAYLOAD_TOO_LARGE (daemon's file limit),
 * FAILED_PRECONDITION (sandbox not running).
 */
export class SandboxFiles {
  readonly #api: ApiTransport;
  readonly #base: () => string;

  constructor(api: ApiTransport, sandboxPath: () => string) {
    this.#api = api;
    this.#base = sandboxPath;
  }

  #url(route: string, path: string, opts: FileOptions, extra: Record<string, string> = {}): string {
    const q = new URLSearchParams({ path, ...(opts.user ? { user: opts.user } : {}), ...extra });
    return `${this.#base()}/files${route}?${q}`;
  }

  /** Writes (creates or replaces) a file; parents are created. `mode` default: kept, or 0o644 for a new file. */
  async write(path: string, data: string | Uint8Array | ReadableStream<Uint8Array>, opts: FileOptions & { mode?: number } = {}): Promise<{ path: string; size: number }> {
    const body = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    const extra: Record<string, string> = opts.mode === undefined ? {} : { mode: opts.mode.toString(8).padStart(4, '0') };
    return this.#api.upload('PUT', this.#url('', path, opts, extra), body, 'application/octet-stream', opts.signal);
  }

  /** The file's bytes as they arrive. */
  async readStream(path: string, opts: FileOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const res = await this.#api.raw('GET', this.#url('', path, opts), undefined, 'application/octet-stream', opts.signal);
    return res.body ?? new ReadableStream({ start: (c) => c.close() });
  }

  async read(path: string, opts: FileOptions = {}): Promise<Uint8Array> {
    return collect(await this.readStream(path, opts), opts.signal);
  }

  async readText(path: string, opts: FileOptions = {}): Promise<string> {
    return new TextDecoder().decode(await this.read(path, opts));
  }

  /** What is at `path` (symlinks followed). */
  stat(path: string, opts: FileOptions = {}): Promise<FileEntry> {
    return this.#api.json<FileEntry>('GET', this.#url('/stat', path, opts), undefined, opts.signal);
  }

  /** A directory's entries, sorted by name (symlinks listed as such, with `linkTarget`). */
  async list(path: string, opts: FileOptions = {}): Promise<FileEntry[]> {
    return (await this.#api.json<{ entries: FileEntry[] }>('GET', this.#url('/list', path, opts), undefined, opts.signal)).entries;
  }

  async mkdir(path: string, opts: FileOptions & { mode?: number; parents?: boolean } = {}): Promise<void> {
    const body: Record<string, unknown> = { path };
    if (opts.mode !== undefined) body.mode = opts.mode;
    if (opts.parents !== undefined) body.parents = opts.parents;
    if (opts.user) body.user = opts.user;
    await this.#api.json<void>('POST', `${this.#base()}/files/mkdir`, body, opts.signal);
  }

  /** Removes a file, a symlink (never its target) or an empty directory; any directory with `recursive`. */
  async remove(path: string, opts: FileOptions & { recursive?: boolean } = {}): Promise<void> {
    await this.#api.json<void>('DELETE', this.#url('', path, opts, opts.recursive ? { recursive: 'true' } : {}), undefined, opts.signal);
  }

  async move(from: string, to: string, opts: FileOptions = {}): Promise<void> {
    await this.#api.json<void>('POST', `${this.#base()}/files/move`, { from, to, ...(opts.user ? { user: opts.user } : {}) }, opts.signal);
  }

  /** A tar stream of `path` (directory tree or file), entries named from its last component. */
  async downloadArchive(path: string, opts: FileOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const res = await this.#api.raw('GET', this.#url('/archive', path, opts), undefined, 'application/x-tar', opts.signal);
    return res.body ?? new ReadableStream({ start: (c) => c.close() });
  }

  /** Extracts a tar into directory `dir` (created if missing): modes, mtimes and symlinks kept. */
  async uploadArchive(dir: string, tar: Uint8Array | ReadableStream<Uint8Array>, opts: FileOptions = {}): Promise<void> {
    await this.#api.upload<void>('PUT', this.#url('/archive', dir, opts), tar, 'application/x-tar', opts.signal);
  }
}

async function collect(stream: ReadableStream<Uint8Array>, signal?: AbortSignal): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = stream.getReader();
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      parts.push(r.value);
      n += r.value.length;
    }
  } catch (e) {
    if (signal?.aborted) throw e;
    // The daemon cuts the stream when reading fails half-way (the file vanished, a read error).
    throw new PrismApiError('UNAVAILABLE', `file stream broke: ${(e as Error).message}`, { retryable: false, cause: e });
  } finally {
    reader.releaseLock();
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
