import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { PrismError } from '../core/errors.js';

/** How a host command ended, and what it wrote (each stream at most 16 MiB). */
export interface CommandResult {
  /** Exit code; null when a signal ended it. */
  code: number | null;
  signal: string | null;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
}

export interface CommandOptions {
  /** Killed (SIGKILL) after this long; absent: 30 s. */
  timeoutMs?: number;
  /** stdout to /dev/null instead of collected (a command whose children keep it open). */
  discardStdout?: boolean;
  /** stderr appended to this file instead of collected. */
  stderrFile?: string;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_OUTPUT = 16 * 1024 * 1024;
const SIGNALS: Record<number, string> = { 1: 'SIGHUP', 2: 'SIGINT', 6: 'SIGABRT', 9: 'SIGKILL', 11: 'SIGSEGV', 13: 'SIGPIPE', 15: 'SIGTERM' };

/**
 * Runs the host commands of the runtimes (runc, mount, umount, cp, nsenter). A command exits 127 with
 * a message on stderr when it cannot be started. When the composition root calls `useSpawnServer`,
 * commands are started by one `prism-init spawnd` helper (guest/init/spawn-server.c) instead of
 * forking prismd: a fork of Node copies its page tables on the main thread (6 ms at 50 MiB of RSS,
 * 25 ms at 250), which capped creates and deletes per second whatever the concurrency.
 */
export function runCommand(cmd: string, args: string[], opts: CommandOptions = {}): Promise<CommandResult> {
  return server ? server.run(cmd, args, opts) : runForked(cmd, args, opts);
}

let server: SpawnServer | undefined;

/** From now on, commands go through `prism-init spawnd` at `initBinary` (undefined: back to forks). */
export function useSpawnServer(initBinary: string | undefined): void {
  server?.close();
  let usable = false;
  try {
    if (initBinary) accessSync(initBinary, constants.X_OK);
    usable = !!initBinary;
  } catch {
    // Not built: commands fork as before (the runtimes' probes say what is missing).
  }
  server = usable ? new SpawnServer(initBinary!) : undefined;
}

/** Node's own child_process: the fallback, and what tests run without a server. */
async function runForked(cmd: string, args: string[], opts: CommandOptions): Promise<CommandResult> {
  const timeout = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (opts.discardStdout || opts.stderrFile) {
    const err = opts.stderrFile ? await open(opts.stderrFile, 'a') : undefined;
    try {
      const child = spawn(cmd, args, { stdio: ['ignore', opts.discardStdout ? 'ignore' : 'pipe', err ? err.fd : 'pipe'], timeout, killSignal: 'SIGKILL' });
      const out: Buffer[] = [];
      const errOut: Buffer[] = [];
      child.stdout?.on('data', (b: Buffer) => out.push(b));
      child.stderr?.on('data', (b: Buffer) => errOut.push(b));
      return await new Promise<CommandResult>((resolve) => {
        child.once('error', (e) => resolve({ code: 127, signal: null, stdout: Buffer.alloc(0), stderr: Buffer.from(`cannot run ${cmd}: ${e.message}\n`), timedOut: false }));
        child.once('exit', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(errOut), timedOut: signal === 'SIGKILL' && child.killed }));
      });
    } finally {
      await err?.close();
    }
  }
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT, encoding: 'buffer' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { killed?: boolean; signal?: string | null }) | null;
      if (e && typeof e.code !== 'number' && !e.signal) {
        resolve({ code: 127, signal: null, stdout, stderr: Buffer.concat([stderr, Buffer.from(`cannot run ${cmd}: ${e.message}\n`)]), timedOut: false });
        return;
      }
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr, timedOut: !!e?.killed });
    });
  });
}

interface Pending {
  resolve: (r: CommandResult) => void;
  cmd: string;
}

/** Client of `prism-init spawnd` (frame format in guest/init/spawn-server.c). */
class SpawnServer {
  private helper?: ChildProcess;
  private failures = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly binary: string) {}

  run(cmd: string, args: string[], opts: CommandOptions): Promise<CommandResult> {
    const helper = this.start();
    const fields = [opts.stderrFile ?? '', cmd, ...args];
    if (!helper?.stdin?.writable || fields.some((f) => f.includes('\0'))) return runForked(cmd, args, opts);
    return new Promise((resolve) => {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffff_ffff ? 1 : this.nextId + 1;
      this.pending.set(id, { resolve, cmd });
      const body = Buffer.from(fields.map((f) => `${f}\0`).join(''), 'utf8');
      const head = Buffer.alloc(13);
      head.writeUInt32BE(9 + body.length, 0);
      head.writeUInt32BE(id, 4);
      head.writeUInt32BE(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, 8);
      head.writeUInt8(opts.discardStdout ? 1 : 0, 12);
      helper.stdin!.write(Buffer.concat([head, body]));
    });
  }

  close(): void {
    const h = this.helper;
    this.helper = undefined;
    h?.stdin?.end();
  }

  private start(): ChildProcess | undefined {
    if (this.helper || this.failures > 3) return this.helper;
    const child = spawn(this.binary, ['spawnd'], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.helper = child;
    child.stdin.on('error', () => undefined);
    child.stdout.on('data', (chunk: Buffer) => this.read(chunk));
    child.on('error', () => undefined);
    child.on('close', () => {
      if (this.helper === child) this.helper = undefined;
      this.failures++;
      this.buf = Buffer.alloc(0);
      // Not run again: a command may have run before the answer was lost (runc run twice is not the same).
      const lost = [...this.pending.values()];
      this.pending.clear();
      for (const p of lost) p.resolve({ code: 127, signal: null, stdout: Buffer.alloc(0), stderr: Buffer.from(`cannot run ${p.cmd}: the command server ended before it answered\n`), timedOut: false });
    });
    return child;
  }

  private read(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (this.buf.length < 4 + len) return;
      const m = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      const id = m.readUInt32BE(0);
      const code = m.readInt32BE(4);
      const sig = m.readInt32BE(8);
      const timedOut = m.readUInt8(12) === 1;
      const outLen = m.readUInt32BE(13);
      const stdout = Buffer.from(m.subarray(17, 17 + outLen));
      const errLen = m.readUInt32BE(17 + outLen);
      const stderr = Buffer.from(m.subarray(21 + outLen, 21 + outLen + errLen));
      const p = this.pending.get(id);
      this.pending.delete(id);
      p?.resolve({ code: code < 0 ? null : code, signal: sig ? (SIGNALS[sig] ?? `SIG${sig}`) : null, stdout, stderr, timedOut });
    }
  }
}

/** runCommand that rejects INTERNAL with `what`, the command and its stderr unless it exits 0. */
export async function runChecked(cmd: string, args: string[], what = `${cmd} ${args.join(' ')}`, opts: CommandOptions = {}): Promise<CommandResult> {
  const r = await runCommand(cmd, args, opts);
  if (r.code !== 0) {
    const why = r.stderr.toString().trim() || (r.timedOut ? 'timed out' : `exited with ${r.code ?? r.signal}`);
    throw new PrismError('INTERNAL', `${what}: ${why}`);
  }
  return r;
}
