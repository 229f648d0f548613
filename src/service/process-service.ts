import { PrismError } from '../core/errors.js';
import { PROCESS_SIGNALS, type ExecResult, type ProcessInfo, type ProcessSignal } from '../core/types.js';
import type { ExecRequest, ExecService, ExecSession } from './exec-service.js';
import type { Logger } from './logger.js';
import type { NodeAgent, TaskEndReason } from './node-agent.js';
import { OutputRing, type RingRead } from './output-ring.js';
import type { SandboxService } from './sandbox-service.js';

export interface ProcessLimits {
  /** Background processes running at once in one sandbox (more: RESOURCE_EXHAUSTED). */
  maxPerSandbox: number;
  /** Bytes of each output stream kept per process (the oldest are dropped past it). */
  bufferBytes: number;
  /** Exited processes kept per sandbox for their result and output; the oldest are forgotten. */
  keepExited: number;
}

export const DEFAULT_PROCESS_LIMITS: ProcessLimits = { maxPerSandbox: 64, bufferBytes: 4 << 20, keepExited: 16 };

export type OutputStream = 'stdout' | 'stderr';

export interface ProcessOutput {
  info: ProcessInfo;
  stdout: RingRead;
  stderr: RingRead;
}

export type FollowEvent = { type: OutputStream; read: RingRead } | { type: 'exit'; info: ProcessInfo };

const WHY: Record<TaskEndReason, string> = {
  stopped: 'its sandbox was stopped',
  deleted: 'its sandbox was deleted',
  failed: "its sandbox's task ended unexpectedly",
};

/** Largest piece of output one follow event carries. */
const FOLLOW_CHUNK = 256 * 1024;

class BackgroundProcess {
  readonly stdout: OutputRing;
  readonly stderr: OutputRing;
  result?: ExecResult;
  endedAt?: string;
  error?: { code: string; message: string };
  /** Set when the sandbox's task is being ended on purpose, so the exit can say why. */
  ending?: TaskEndReason;
  private waiters = new Set<() => void>();
  private markExited!: () => void;
  /** Resolves once the process exited. */
  readonly exit = new Promise<void>((r) => (this.markExited = r));

  constructor(readonly id: string, readonly sandboxId: string, readonly cmd: string[], readonly startedAt: string, readonly session: ExecSession, rings: { stdout: OutputRing; stderr: OutputRing }) {
    this.stdout = rings.stdout;
    this.stderr = rings.stderr;
  }

  get running(): boolean {
    return this.result === undefined;
  }

  get stdinOpen(): boolean {
    const s = this.session.stdin;
    return this.running && !!s && !s.writableEnded && !s.destroyed;
  }

  finish(r: ExecResult, error?: { code: string; message: string }): void {
    this.result = r;
    this.endedAt = new Date().toISOString();
    const err = error ?? (this.ending ? { code: 'INTERRUPTED', message: `the process ended because ${WHY[this.ending]}` } : undefined);
    if (err) this.error = err;
    this.session.stdin?.destroy();
    this.markExited();
    this.notify();
  }

  /** Wakes everyone waiting for output or the exit. */
  notify(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  /** Resolves at the next output or the exit, after `ms`, or when `signal` aborts. */
  changed(ms: number, signal?: AbortSignal): Promise<void> {
    if (!this.running || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        signal?.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }

  info(): ProcessInfo {
    const out: ProcessInfo = {
      id: this.id,
      sandboxId: this.sandboxId,
      cmd: this.cmd,
      status: this.running ? 'running' : 'exited',
      startedAt: this.startedAt,
      stdinOpen: this.stdinOpen,
      stdoutBytes: this.stdout.end,
      stderrBytes: this.stderr.end,
    };
    if (this.result) Object.assign(out, this.result);
    if (this.endedAt) out.endedAt = this.endedAt;
    if (this.error) out.error = this.error;
    return out;
  }
}

/**
 * Background processes: commands started with `background: true` that run apart from the request
 * that started them. They live in this node's memory (the node that owns the sandbox), with the last
 * `bufferBytes` of each output stream; they end with their sandbox (stop, delete, a dead task) and
 * with prismd, whose exec connections their lives hang on. Exec timeouts and exec records apply as
 * for any command, through the ExecService.
 */
export class ProcessService {
  /** By sandbox id, then process id, in start order. */
  private readonly bySandbox = new Map<string, Map<string, BackgroundProcess>>();
  /** Starts under way per sandbox, counted against the limit before their exec returns. */
  private readonly starting = new Map<string, number>();
  /** Sandboxes stopped or deleted while a start was under way: that process ends (or ended) with them. */
  private readonly endedWhileStarting = new Map<string, TaskEndReason>();

  constructor(
    private readonly sandboxes: SandboxService,
    private readonly exec: ExecService,
    agent: NodeAgent,
    private readonly limits: ProcessLimits,
    private readonly log: Logger,
  ) {
    agent.onTaskEnd((id, why) => this.taskEnding(id, why));
  }

  async start(idOrName: string, req: ExecRequest): Promise<ProcessInfo> {
    const sb = await this.sandboxes.get(idOrName);
    const procs = this.bySandbox.get(sb.id);
    const running = [...(procs?.values() ?? [])].filter((p) => p.running).length + (this.starting.get(sb.id) ?? 0);
    if (running >= this.limits.maxPerSandbox) {
      throw new PrismError('RESOURCE_EXHAUSTED', `sandbox '${sb.name}' already runs ${this.limits.maxPerSandbox} background processes (the most allowed); wait for one or kill it`);
    }
    this.starting.set(sb.id, (this.starting.get(sb.id) ?? 0) + 1);
    const rings = { stdout: new OutputRing(this.limits.bufferBytes), stderr: new OutputRing(this.limits.bufferBytes) };
    let proc: BackgroundProcess | undefined;
    let session: ExecSession;
    let endedMeanwhile: TaskEndReason | undefined;
    try {
      // Rings never push back: a process nobody reads keeps running and loses its oldest output.
      session = await this.exec.exec(sb.id, { ...req, keepStdinOpen: true }, {
        stdout: (b) => (rings.stdout.push(b), proc?.notify()),
        stderr: (b) => (rings.stderr.push(b), proc?.notify()),
      });
    } finally {
      endedMeanwhile = this.endedWhileStarting.get(sb.id);
      const n = (this.starting.get(sb.id) ?? 1) - 1;
      if (n > 0) this.starting.set(sb.id, n);
      else (this.starting.delete(sb.id), this.endedWhileStarting.delete(sb.id));
    }
    proc = new BackgroundProcess(session.id, sb.id, req.argv, new Date().toISOString(), session, rings);
    if (endedMeanwhile) proc.ending = endedMeanwhile;
    // A sandbox deleted meanwhile is not brought back into the books; its process dies with its task.
    if (endedMeanwhile !== 'deleted') {
      let map = this.bySandbox.get(sb.id);
      if (!map) this.bySandbox.set(sb.id, (map = new Map()));
      map.set(proc.id, proc);
    }
    const p = proc;
    session.done.then(
      (r) => this.exited(p, r),
      (e: unknown) => {
        this.log.error({ err: e, sandbox: sb.id, process: p.id }, 'background process failed');
        this.exited(p, { exitCode: -1, timedOut: false, oomKilled: false, diskFull: false, durationMs: 0 }, { code: 'INTERNAL', message: 'the process was lost' });
      },
    );
    this.log.info({ sandbox: sb.id, process: p.id }, 'background process started');
    return p.info();
  }

  private exited(p: BackgroundProcess, r: ExecResult, error?: { code: string; message: string }): void {
    p.finish(r, error);
    this.log.debug({ sandbox: p.sandboxId, process: p.id, exitCode: r.exitCode, signal: r.signal, timedOut: r.timedOut, durationMs: r.durationMs }, 'background process exited');
    const map = this.bySandbox.get(p.sandboxId);
    if (!map) return;
    const exited = [...map.values()].filter((x) => !x.running);
    for (const old of exited.slice(0, Math.max(0, exited.length - this.limits.keepExited))) map.delete(old.id);
  }

  private taskEnding(sandboxId: string, why: TaskEndReason): void {
    if (this.starting.has(sandboxId)) this.endedWhileStarting.set(sandboxId, why);
    const map = this.bySandbox.get(sandboxId);
    if (!map) return;
    for (const p of map.values()) if (p.running) p.ending = why;
    // A deleted sandbox's processes are forgotten now; anyone following or waiting still gets the exit.
    if (why === 'deleted') this.bySandbox.delete(sandboxId);
  }

  async list(idOrName: string): Promise<ProcessInfo[]> {
    const sb = await this.sandboxes.get(idOrName);
    return [...(this.bySandbox.get(sb.id)?.values() ?? [])].map((p) => p.info());
  }

  private async find(idOrName: string, pid: string): Promise<BackgroundProcess> {
    const sb = await this.sandboxes.get(idOrName);
    const p = this.bySandbox.get(sb.id)?.get(pid);
    if (!p) throw new PrismError('NOT_FOUND', `process '${pid}' not found in sandbox '${sb.name}' (background processes are kept in memory until deleted, evicted or prismd restarts)`);
    return p;
  }

  async get(idOrName: string, pid: string): Promise<ProcessInfo> {
    return (await this.find(idOrName, pid)).info();
  }

  /**
   * Output from the given offsets on (absolute byte counts; 0 for the start). While the process runs,
   * a UTF-8 character cut at the end is left for the next read.
   */
  async output(idOrName: string, pid: string, offsets: Record<OutputStream, number>): Promise<ProcessOutput> {
    const p = await this.find(idOrName, pid);
    return readBoth(p, offsets);
  }

  /**
   * Output as it comes, from the given offsets, until the process exits (an `exit` event last) or
   * `signal` aborts. The consumer sets the pace: what it does not take in time is dropped from the
   * ring, and the next event says how many bytes were missed.
   */
  async *follow(idOrName: string, pid: string, offsets: Record<OutputStream, number>, signal?: AbortSignal): AsyncGenerator<FollowEvent> {
    const p = await this.find(idOrName, pid);
    const at = { ...offsets };
    while (!signal?.aborted) {
      const wasRunning = p.running;
      let got = false;
      for (const s of ['stdout', 'stderr'] as const) {
        const read = p[s].read(at[s], { max: FOLLOW_CHUNK, wholeChars: wasRunning });
        at[s] = read.next;
        if (read.data.length === 0 && read.dropped === 0) continue;
        got = true;
        yield { type: s, read };
      }
      if (got) continue;
      if (!wasRunning) {
        yield { type: 'exit', info: p.info() };
        return;
      }
      await p.changed(60_000, signal);
    }
  }

  /** Waits up to `timeoutMs` for the process to exit; answers its state either way. */
  async wait(idOrName: string, pid: string, timeoutMs: number, signal?: AbortSignal): Promise<ProcessInfo> {
    const p = await this.find(idOrName, pid);
    const deadline = Date.now() + timeoutMs;
    while (p.running && !signal?.aborted && Date.now() < deadline) await p.changed(deadline - Date.now(), signal);
    return p.info();
  }

  async writeStdin(idOrName: string, pid: string, data: Buffer, close: boolean): Promise<ProcessInfo> {
    const p = await this.find(idOrName, pid);
    const stdin = p.session.stdin;
    if (!p.running) throw new PrismError('FAILED_PRECONDITION', `process '${pid}' has exited`);
    if (!stdin || !p.stdinOpen) throw new PrismError('FAILED_PRECONDITION', `the stdin of process '${pid}' is closed`);
    if (data.length > 0) {
      // The exit stops the wait too: a connection that closed under the write never calls back.
      await Promise.race([new Promise<void>((resolve) => stdin.write(data, () => resolve())), p.exit]);
    }
    if (close) stdin.end();
    return p.info();
  }

  /** Sets the terminal size of a process started with `tty`. */
  async resize(idOrName: string, pid: string, cols: number, rows: number): Promise<ProcessInfo> {
    const p = await this.find(idOrName, pid);
    if (!p.session.resize) throw new PrismError('FAILED_PRECONDITION', `process '${pid}' has no terminal`);
    if (!p.running) throw new PrismError('FAILED_PRECONDITION', `process '${pid}' has exited`);
    p.session.resize(cols, rows);
    return p.info();
  }

  async signal(idOrName: string, pid: string, sig: ProcessSignal): Promise<ProcessInfo> {
    if (!PROCESS_SIGNALS.includes(sig)) throw new PrismError('INVALID_ARGUMENT', `signal must be one of ${PROCESS_SIGNALS.join(', ')}`);
    const p = await this.find(idOrName, pid);
    if (!p.running) throw new PrismError('FAILED_PRECONDITION', `process '${pid}' has exited`);
    p.session.signal(sig);
    return p.info();
  }

  /** Kills the process if it runs and forgets it. */
  async remove(idOrName: string, pid: string): Promise<void> {
    const p = await this.find(idOrName, pid);
    if (p.running) p.session.cancel();
    this.bySandbox.get(p.sandboxId)?.delete(pid);
  }

  /** prismd is going away: its background processes end with it (their exec connections close anyway). */
  close(): void {
    for (const map of this.bySandbox.values()) for (const p of map.values()) if (p.running) p.session.cancel();
    this.bySandbox.clear();
  }
}

function readBoth(p: BackgroundProcess, offsets: Record<OutputStream, number>): ProcessOutput {
  // Read `running` first: bytes that arrive with the exit are then either read or left for the next call.
  const info = p.info();
  const wholeChars = info.status === 'running';
  return { info, stdout: p.stdout.read(offsets.stdout, { wholeChars }), stderr: p.stderr.read(offsets.stderr, { wholeChars }) };
}
