import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { PrismError } from '../core/errors.js';
import type { Sandbox } from '../core/types.js';
import { TASK_INIT_PATH, type TaskProcess } from '../runtime/driver.js';
import { CappedBuffer } from './capped-buffer.js';
import { recordsFromTar, tarFromRecords } from './file-archive.js';
import { frameHeader, helperError, parseRecords, RecordReader, toEntry, type FileEntry } from './file-records.js';
import type { NodeAgent } from './node-agent.js';
import type { SandboxService } from './sandbox-service.js';

export type { FileEntry } from '../core/types.js';

/** One change a watch saw: its kind (as fsnotify names them) and the path relative to the watched directory. */
export interface FileChange {
  type: 'create' | 'write' | 'remove' | 'rename' | 'chmod';
  name: string;
}

export interface FileWatch {
  events: AsyncGenerator<FileChange>;
  stop(): void;
}

export interface FileLimits {
  /** Largest file read or written in one request (`--max-file-mb`); PAYLOAD_TOO_LARGE past it. */
  maxFileBytes: number;
}

export const DEFAULT_MAX_FILE_BYTES = 1024 ** 3;

/** Run as the task's root instead of the sandbox's user. */
export interface FileOpOptions {
  asRoot?: boolean;
}

const MAX_PATH = 4096;
const LIST_OUTPUT_BYTES = 64 << 20;

/**
 * Resolves once the helper reported a failure (it writes only that to stderr) or exited: the moment to
 * stop sending and close its stdin, which it reads to the end before exiting (fs-helper.c drain_stdin).
 */
function stopped(proc: TaskProcess): Promise<'exit'> {
  return new Promise((resolve) => {
    proc.stderr.once('data', () => resolve('exit'));
    void proc.result.then(() => resolve('exit'), () => resolve('exit'));
  });
}

/** A request body that broke off (the client went away) is the client's doing, not an internal error. */
function cutShort(e: unknown): unknown {
  if (e instanceof PrismError) return e;
  return new PrismError('INVALID_ARGUMENT', `the upload broke off before its end: ${(e as Error).message}`, { cause: e });
}

/** Absolute, no NUL, bounded: anything else is INVALID_ARGUMENT before the sandbox is touched. */
export function checkPath(path: string, what = 'path'): string {
  if (typeof path !== 'string' || path === '') throw new PrismError('INVALID_ARGUMENT', `${what} is required`);
  if (!path.startsWith('/')) throw new PrismError('INVALID_ARGUMENT', `${what} must be absolute (start with '/'), got '${path}'`);
  if (path.includes('\0')) throw new PrismError('INVALID_ARGUMENT', `${what} must not contain NUL bytes`);
  if (Buffer.byteLength(path) > MAX_PATH) throw new PrismError('INVALID_ARGUMENT', `${what} is longer than ${MAX_PATH} bytes`);
  return path;
}

function checkMode(mode: number | undefined): string | undefined {
  if (mode === undefined) return undefined;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new PrismError('INVALID_ARGUMENT', `mode must be between 0 and 0o7777, got ${mode}`);
  return mode.toString(8);
}

/**
 * Files of a running sandbox (docs/api.md, "Files"). Every operation runs `prism-init fs` inside the
 * task through the driver's exec (guest/init/fs-helper.c), so paths and symlinks resolve against the
 * sandbox's own root on every runtime: this class never names a host path. Operations run as the
 * sandbox's user unless `asRoot`; the file limit bounds reads and writes.
 */
export class FileService {
  constructor(
    private readonly sandboxes: SandboxService,
    private readonly agent: NodeAgent,
    private readonly limits: FileLimits,
  ) {}

  private async start(idOrName: string, args: string[], opts: FileOpOptions, stdin = false): Promise<{ proc: TaskProcess; stderr: CappedBuffer }> {
    const sb: Sandbox = await this.sandboxes.active(idOrName, 'start it to use its files');
    const proc = await this.agent.exec(sb, { argv: [TASK_INIT_PATH, 'fs', ...args], env: {}, cwd: '/', stdin, asRoot: opts.asRoot === true });
    const stderr = new CappedBuffer(16 << 10);
    proc.stderr.on('data', (b: Buffer) => stderr.push(b));
    proc.stdin?.on('error', () => undefined); // the helper may fail and exit before reading its stdin
    return { proc, stderr };
  }

  private async finish(proc: TaskProcess, stderr: CappedBuffer): Promise<void> {
    const r = await proc.result;
    if (r.exitCode !== 0 || r.signal) throw helperError(stderr.bytes().toString('utf8'), r.exitCode, r.signal);
  }

  /** Runs an operation whose whole output is small (stat, list, mkdir, ...). */
  private async run(idOrName: string, args: string[], opts: FileOpOptions): Promise<Buffer> {
    const { proc, stderr } = await this.start(idOrName, args, opts);
    const out = new CappedBuffer(LIST_OUTPUT_BYTES);
    proc.stdout.on('data', (b: Buffer) => out.push(b));
    await this.finish(proc, stderr);
    if (out.truncated) throw new PrismError('RESOURCE_EXHAUSTED', `the listing is larger than ${LIST_OUTPUT_BYTES} bytes`);
    return out.bytes();
  }

  /**
   * Resolves once the helper has either produced its first byte or exited cleanly, so that a failure
   * to open (NOT_FOUND, a directory, ...) is an ordinary error, not a broken stream. The stream ends
   * with an error if the helper fails later; destroying it kills the helper.
   */
  private async streamOutput(proc: TaskProcess, stderr: CappedBuffer, transform?: (src: AsyncIterator<Buffer>) => AsyncGenerator<Buffer>): Promise<Readable> {
    // 'readable' comes with the first bytes or at the end of an empty output. The result itself waits
    // for stdout to be consumed, so it cannot be raced against.
    await new Promise<void>((resolve) => proc.stdout.once('readable', () => resolve()));
    if (proc.stdout.readableLength === 0) {
      proc.stdout.resume();
      await this.finish(proc, stderr);
      const empty = (async function* (): AsyncGenerator<Buffer> {})();
      return Readable.from(transform ? transform(empty) : empty);
    }
    const finish = () => this.finish(proc, stderr);
    let done = false;
    async function* body(): AsyncGenerator<Buffer> {
      try {
        const src = proc.stdout[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
        if (transform) yield* transform(src);
        else for (let c = await src.next(); !c.done; c = await src.next()) yield c.value;
        await finish();
        done = true;
      } finally {
        if (!done) proc.kill('SIGKILL');
      }
    }
    return Readable.from(body(), { objectMode: false });
  }

  /** The file's bytes as a stream (regular files only; links followed inside the sandbox). */
  async read(idOrName: string, path: string, opts: FileOpOptions = {}): Promise<Readable> {
    const { proc, stderr } = await this.start(idOrName, ['read', checkPath(path), String(this.limits.maxFileBytes)], opts);
    return this.streamOutput(proc, stderr);
  }

  /**
   * Writes `data` to `path` (parents created), replacing it only once all of it arrived: an upload
   * that fails or is cut short leaves the old file, and no temp file. `mode` absent: an existing
   * file keeps its mode, a new one gets 0644.
   */
  async write(idOrName: string, path: string, data: AsyncIterable<Buffer | Uint8Array>, opts: FileOpOptions & { mode?: number } = {}): Promise<{ size: number }> {
    const { proc, stderr } = await this.start(idOrName, ['write', checkPath(path), checkMode(opts.mode) ?? '-'], opts, true);
    const stdin = proc.stdin!;
    proc.stdout.resume(); // nothing to read, but the result waits until stdout was consumed
    const exited = stopped(proc);
    const send = async (b: Buffer) => {
      if (!stdin.write(b)) await Promise.race([new Promise((r) => stdin.once('drain', r)), exited]);
    };
    let size = 0;
    // Iterated by hand: `for await` would destroy the request on an early exit, and with it the socket
    // the error answer must go out on.
    const it = data[Symbol.asyncIterator]();
    try {
      for (let next = await it.next(); !next.done; next = await it.next()) {
        const chunk = next.value;
        if (chunk.length === 0) continue;
        size += chunk.length;
        if (size > this.limits.maxFileBytes) {
          throw new PrismError('PAYLOAD_TOO_LARGE', `${path}: larger than the daemon allows (${this.limits.maxFileBytes} bytes, --max-file-mb)`);
        }
        if ((await Promise.race([send(frameHeader(chunk.length)).then(() => send(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length))), exited])) === 'exit') break;
      }
    } catch (e) {
      // No end frame: the helper drops its temp file and keeps the old one.
      stdin.end();
      await proc.result.catch(() => undefined);
      throw cutShort(e);
    }
    stdin.end(frameHeader(0));
    await this.finish(proc, stderr);
    return { size };
  }

  /** What is at `path`, links followed. */
  async stat(idOrName: string, path: string, opts: FileOpOptions = {}): Promise<FileEntry> {
    const [r] = parseRecords(await this.run(idOrName, ['stat', checkPath(path)], opts));
    if (!r) throw new PrismError('INTERNAL', 'file helper sent no record');
    return toEntry(r);
  }

  /** The entries of a directory, sorted by name; links in it are listed, not followed. */
  async list(idOrName: string, path: string, opts: FileOpOptions = {}): Promise<FileEntry[]> {
    const entries = parseRecords(await this.run(idOrName, ['list', checkPath(path)], opts)).map(toEntry);
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async mkdir(idOrName: string, path: string, opts: FileOpOptions & { mode?: number; parents?: boolean } = {}): Promise<void> {
    await this.run(idOrName, ['mkdir', checkPath(path), checkMode(opts.mode) ?? '755', opts.parents ? '1' : '0'], opts);
  }

  /** Removes a file, link (never its target) or empty directory; a whole tree with `recursive`. */
  async remove(idOrName: string, path: string, opts: FileOpOptions & { recursive?: boolean } = {}): Promise<void> {
    if (/^\/+$/.test(checkPath(path))) throw new PrismError('INVALID_ARGUMENT', "refusing to remove '/'");
    await this.run(idOrName, ['remove', path, opts.recursive ? '1' : '0'], opts);
  }

  /**
   * Changes under directory `path` as they happen (`recursive`: in subdirectories too), until `stop()`,
   * the directory going away (the events end), or a failure (the iterator throws). Resolves once the
   * watch is in place; NOT_FOUND / INVALID_ARGUMENT (not a directory) before that.
   */
  async watch(idOrName: string, path: string, opts: FileOpOptions & { recursive?: boolean } = {}): Promise<FileWatch> {
    const { proc, stderr } = await this.start(idOrName, ['watch', checkPath(path), opts.recursive ? '1' : '0'], opts);
    const lines = createInterface({ input: proc.stdout, crlfDelay: Infinity })[Symbol.asyncIterator]();
    const first = await lines.next();
    if (first.done || first.value !== 'ready') {
      await this.finish(proc, stderr);
      throw new PrismError('INTERNAL', 'the watch helper ended before it was ready');
    }
    const finish = () => this.finish(proc, stderr);
    let stopped = false;
    async function* events(): AsyncGenerator<FileChange> {
      try {
        for (;;) {
          const next = await lines.next();
          if (next.done) break;
          const at = next.value.indexOf(' ');
          const type = next.value.slice(0, at) as FileChange['type'];
          yield { type, name: next.value.slice(at + 1).replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c)) };
        }
        if (!stopped) await finish();
      } finally {
        proc.kill('SIGKILL');
      }
    }
    return {
      events: events(),
      stop: () => {
        stopped = true;
        proc.kill('SIGKILL');
      },
    };
  }

  async move(idOrName: string, from: string, to: string, opts: FileOpOptions = {}): Promise<void> {
    await this.run(idOrName, ['move', checkPath(from, 'from'), checkPath(to, 'to')], opts);
  }

  /** A tar of `path` (a directory's whole tree, or one file), entries named from its last component. */
  async downloadArchive(idOrName: string, path: string, opts: FileOpOptions = {}): Promise<Readable> {
    const { proc, stderr } = await this.start(idOrName, ['archive-out', checkPath(path)], opts);
    return this.streamOutput(proc, stderr, (src) => tarFromRecords(new RecordReader(src)));
  }

  /** Extracts a tar into directory `dir` (created if missing); modes, mtimes and symlinks kept. */
  async uploadArchive(idOrName: string, dir: string, tar: AsyncIterable<Buffer>, opts: FileOpOptions = {}): Promise<void> {
    const { proc, stderr } = await this.start(idOrName, ['archive-in', checkPath(dir)], opts, true);
    const stdin = proc.stdin!;
    proc.stdout.resume(); // nothing to read, but the result waits until stdout was consumed
    const exited = stopped(proc);
    try {
      // recordsFromTar reads `tar` through its own iterator and never returns it early (see write).
      // No size cap: what an archive holds is bounded by the sandbox's disk (ENOSPC).
      for await (const rec of recordsFromTar(tar)) {
        if (!stdin.write(rec) && (await Promise.race([new Promise((r) => stdin.once('drain', r)), exited])) === 'exit') break;
      }
    } catch (e) {
      stdin.end(); // no end record: the helper stops where it is
      await proc.result.catch(() => undefined);
      throw cutShort(e);
    }
    stdin.end();
    await this.finish(proc, stderr);
  }
}
