import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PrismError } from '../core/errors.js';
import { packageRoot } from '../daemon/package-info.js';
import type { ExecService, ExecSession } from '../service/exec-service.js';
import type { Logger } from '../service/logger.js';

/**
 * The code interpreter behind E2B's port 49999 (`@e2b/code-interpreter`): per sandbox, one driver
 * process (guest/code-interpreter/driver.py, run as `python3 -u -c`) that keeps a real Jupyter kernel
 * per context, so state persists between runCode calls and results come out as IPython formats them.
 * prismd talks to it as NDJSON over the process's stdin and stdout, through the ordinary exec path:
 * it works on every runtime, needs no network in the sandbox, and dies with the sandbox.
 */

type Reply = { msg?: Record<string, unknown>; done?: boolean; result?: unknown; error?: { status: number; message: string } };

interface Pending {
  push(r: Reply): void;
}

class Driver {
  private next = 1;
  private readonly pending = new Map<number, Pending>();
  private buffered = '';
  readonly ready: Promise<void>;
  private markReady!: () => void;
  private failReady!: (e: Error) => void;
  private stderr = '';
  session?: ExecSession;
  dead = false;

  constructor() {
    this.ready = new Promise((resolve, reject) => ((this.markReady = resolve), (this.failReady = reject)));
    this.ready.catch(() => undefined);
  }

  onStdout(b: Buffer): void {
    this.buffered += b.toString('utf8');
    for (let nl = this.buffered.indexOf('\n'); nl !== -1; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      if (!line.trim()) continue;
      let r: Reply & { id?: number; ready?: boolean };
      try {
        r = JSON.parse(line) as Reply & { id?: number; ready?: boolean };
      } catch {
        continue;
      }
      if (r.ready) this.markReady();
      else if (typeof r.id === 'number') this.pending.get(r.id)?.push(r);
    }
  }

  onStderr(b: Buffer): void {
    this.stderr = (this.stderr + b.toString('utf8')).slice(-4000);
  }

  ended(why: string): void {
    this.dead = true;
    const message = `the code interpreter stopped (${why})${this.stderr ? `: ${this.stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`;
    this.failReady(new PrismError('UNAVAILABLE', message));
    for (const p of this.pending.values()) p.push({ error: { status: 502, message } });
    this.pending.clear();
  }

  /** Sends a request; its replies come out of the iterator until done or error. */
  async *request(body: Record<string, unknown>, signal?: AbortSignal): AsyncGenerator<Reply> {
    await this.ready;
    const id = this.next++;
    const queue: Reply[] = [];
    let wake: (() => void) | undefined;
    this.pending.set(id, { push: (r) => (queue.push(r), wake?.()) });
    const abort = () => wake?.();
    signal?.addEventListener('abort', abort);
    try {
      this.session!.stdin!.write(`${JSON.stringify({ ...body, id })}\n`);
      for (;;) {
        while (queue.length) {
          const r = queue.shift()!;
          yield r;
          if (r.done || r.error) return;
        }
        if (signal?.aborted) {
          // The client went away mid-execution: stop the kernel's work, as a user pressing Ctrl-C.
          if (body.op === 'execute') this.session?.stdin?.write(`${JSON.stringify({ op: 'interrupt', id: this.next++, ...(body.context_id ? { context_id: body.context_id } : {}) })}\n`);
          return;
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      this.pending.delete(id);
      signal?.removeEventListener('abort', abort);
    }
  }
}

const BOOTSTRAP = 'import sys, json; exec(compile(json.loads(sys.stdin.readline()), "prism-code-interpreter", "exec"))';

const DRIVER_SOURCE = (() => {
  let text: string | undefined;
  return () => (text ??= readFileSync(join(packageRoot(), 'guest', 'code-interpreter', 'driver.py'), 'utf8'));
})();

export class CodeInterpreters {
  private readonly drivers = new Map<string, Driver>();

  constructor(
    private readonly exec: ExecService,
    private readonly log: Logger,
  ) {}

  /** The sandbox's driver, started on first use (as the sandbox's user, in its home). */
  private async driver(sandboxId: string, home: string): Promise<Driver> {
    const cur = this.drivers.get(sandboxId);
    if (cur && !cur.dead) return cur;
    const d = new Driver();
    this.drivers.set(sandboxId, d);
    try {
      d.session = await this.exec.exec(
        sandboxId,
        // The driver's source is the first line of its stdin (as JSON), so the command line stays short.
        { argv: ['python3', '-u', '-c', BOOTSTRAP], stdin: Buffer.from(`${JSON.stringify(DRIVER_SOURCE())}\n`), cwd: home, env: { HOME: home, JUPYTER_RUNTIME_DIR: '/tmp/.prism-jupyter', MPLBACKEND: 'module://matplotlib_inline.backend_inline' }, keepStdinOpen: true },
        { stdout: (b) => d.onStdout(b), stderr: (b) => d.onStderr(b) },
      );
    } catch (e) {
      this.drivers.delete(sandboxId);
      throw e;
    }
    const gone = (why: string) => {
      d.ended(why);
      if (this.drivers.get(sandboxId) === d) this.drivers.delete(sandboxId);
    };
    d.session.done.then(
      (r) => gone(r.signal ? `killed by ${r.signal}` : `exit code ${r.exitCode}`),
      (e: unknown) => gone((e as Error).message),
    );
    const timer = setTimeout(() => d.ended('it did not start within 120 s'), 120_000);
    try {
      await d.ready;
    } finally {
      clearTimeout(timer);
    }
    return d;
  }

  /** Items of one execution, E2B's NDJSON objects, in order; throws a PrismError-like failure first. */
  async *execute(sandboxId: string, home: string, req: { code: string; context_id?: string; language?: string; env_vars?: Record<string, string> }, signal?: AbortSignal): AsyncGenerator<Record<string, unknown>> {
    const d = await this.driver(sandboxId, home);
    for await (const r of d.request({ op: 'execute', ...req }, signal)) {
      if (r.error) throw new CodeInterpreterError(r.error.status, r.error.message);
      if (r.msg) yield r.msg;
    }
  }

  /** A context operation: its result, or a CodeInterpreterError with E2B's status. */
  async call(sandboxId: string, home: string, body: Record<string, unknown>): Promise<unknown> {
    const d = await this.driver(sandboxId, home);
    for await (const r of d.request(body)) {
      if (r.error) throw new CodeInterpreterError(r.error.status, r.error.message);
      if (r.done) return r.result;
    }
    throw new CodeInterpreterError(502, 'the code interpreter gave no answer');
  }

  /** The sandbox is gone (or prismd stops): its driver ends with it. */
  forget(sandboxId: string): void {
    this.drivers.get(sandboxId)?.session?.cancel();
    this.drivers.delete(sandboxId);
  }

  close(): void {
    for (const id of [...this.drivers.keys()]) this.forget(id);
    this.log.debug({}, 'code interpreters closed');
  }
}

export class CodeInterpreterError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}
