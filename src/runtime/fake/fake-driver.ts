import { constants } from 'node:os';
import { posix } from 'node:path';
import { PassThrough } from 'node:stream';
import { PrismError } from '../../core/errors.js';
import type { ExecResult, RuntimeName } from '../../core/types.js';
import type {
  ExecOptions,
  ProbeResult,
  RuntimeCapabilities,
  RuntimeDriver,
  RuntimeImage,
  TaskHandle,
  TaskProcess,
  TaskSpec,
  TaskState,
  TaskStats,
} from '../driver.js';

/**
 * An in-memory RuntimeDriver FOR UNIT TESTS ONLY: it isolates nothing and runs no real processes.
 * It lets service-layer tests run without root, runc or a rootfs, and lets them inject the failures a
 * real host produces (a failed create, a task gone after a reboot, a task stopped while prismd was down).
 *
 * Tasks live in this object, so a new NodeAgent given the same FakeDriver sees them as a restarted
 * daemon sees still-running containers. Commands are a tiny deterministic built-in set:
 *   echo ARGS...     writes ARGS joined by spaces + "\n" to stdout
 *   exit N           exits with status N
 *   sleep MS         waits MS milliseconds (ended early by kill() or stopping the task)
 *   cat              copies stdin to stdout
 *   write PATH TEXT  / read PATH   on the task's filesystem (kept across stop/start, gone on destroy)
 *   bytes HEX        writes the raw bytes HEX to stdout (for output-encoding tests)
 *   env / pwd        print the command's environment (sorted KEY=VALUE lines) / working directory
 *   size             prints the terminal's "rows cols" (as `stty size`); fails without a tty
 * Anything else exits 127 with a message on stderr, as a shell does for an unknown command.
 * With `tty` stdin is always writable, whatever the command writes to stderr goes to stdout (one
 * terminal) and `resize` changes what `size` prints; there is no line discipline.
 */

type CommandResult = Omit<ExecResult, 'timedOut' | 'durationMs' | 'limitExceeded'>;

interface FakeTask {
  handle: TaskHandle;
  state: 'running' | 'paused' | 'stopped';
  files: Map<string, Buffer>;
  procs: Set<FakeProcess>;
}

export interface FakeDriverOptions {
  name?: RuntimeName;
  capabilities?: Partial<RuntimeCapabilities>;
  /**
   * Gives the fake images of its own, as a Docker engine has (capabilities().ownImages): `local` by
   * reference, what findImage finds; `registry`, what pullImage can fetch (then local too) or the
   * error its pull fails with. A reference in neither fails to pull with NOT_FOUND.
   */
  ownImages?: { local?: Record<string, RuntimeImage>; registry?: Record<string, RuntimeImage | PrismError> };
}

class FakeProcess implements TaskProcess {
  readonly stdin: PassThrough | null;
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly result: Promise<Omit<ExecResult, 'timedOut'>>;
  private killed?: NodeJS.Signals;
  private onKill?: () => void;
  private readonly t0 = performance.now();
  private size?: { cols: number; rows: number };
  resize?: (cols: number, rows: number) => void;

  constructor(private readonly task: FakeTask, private readonly opts: ExecOptions) {
    this.stdin = opts.stdin || opts.tty ? new PassThrough() : null;
    if (opts.tty) {
      this.stderr.end().resume(); // a terminal has one output stream: stdout
      this.size = { ...opts.tty };
      this.resize = (cols, rows) => (this.size = { cols, rows });
    }
    this.result = new Promise<CommandResult>((resolve) => setImmediate(() => this.run().then(resolve)))
      .then(async (r) => {
        this.stdout.end();
        this.stderr.end();
        // Like a pipe: the result is ready once the reader has taken all the output.
        await Promise.all([ended(this.stdout), ended(this.stderr)]);
        this.task.procs.delete(this);
        return { ...r, durationMs: Math.round(performance.now() - this.t0) };
      });
    task.procs.add(this);
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.killed) return;
    this.killed = signal;
    this.onKill?.();
  }

  private killedResult(): CommandResult {
    const sig = this.killed!;
    return { exitCode: 128 + (constants.signals[sig] ?? 9), signal: sig, oomKilled: false, diskFull: false };
  }

  /** Resolves after `ms`, or early (false) when the process is killed. */
  private wait(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(true), ms);
      this.onKill = () => {
        clearTimeout(t);
        resolve(false);
      };
    });
  }

  private async run(): Promise<CommandResult> {
    if (this.killed) return this.killedResult();
    const [cmd, ...args] = this.opts.argv;
    const ok = (exitCode = 0): CommandResult => ({ exitCode, oomKilled: false, diskFull: false });
    const fail = (msg: string, exitCode = 1): CommandResult => {
      (this.size ? this.stdout : this.stderr).write(`${cmd}: ${msg}\n`);
      return ok(exitCode);
    };
    const path = (p: string | undefined) => posix.resolve(this.opts.cwd || '/', p ?? '');
    switch (cmd) {
      case 'echo':
        this.stdout.write(`${args.join(' ')}\n`);
        return ok();
      case 'exit': {
        const n = Number(args[0] ?? '0');
        return Number.isInteger(n) && n >= 0 && n <= 255 ? ok(n) : fail(`bad status '${args[0]}'`, 2);
      }
      case 'sleep':
        return (await this.wait(Number(args[0] ?? '0'))) ? ok() : this.killedResult();
      case 'cat':
        return this.cat();
      case 'write':
        if (args[0] === undefined) return fail('usage: write PATH TEXT', 2);
        this.task.files.set(path(args[0]), Buffer.from(args.slice(1).join(' ')));
        return ok();
      case 'read': {
        const data = this.task.files.get(path(args[0]));
        if (!data) return fail(`${args[0]}: No such file or directory`);
        this.stdout.write(data);
        return ok();
      }
      case 'bytes':
        this.stdout.write(Buffer.from(args[0] ?? '', 'hex'));
        return ok();
      case 'env':
        for (const k of Object.keys(this.opts.env).sort()) this.stdout.write(`${k}=${this.opts.env[k]}\n`);
        return ok();
      case 'pwd':
        this.stdout.write(`${this.opts.cwd}\n`);
        return ok();
      case 'size':
        if (!this.size) return fail('standard input is not a terminal');
        this.stdout.write(`${this.size.rows} ${this.size.cols}\n`);
        return ok();
      default:
        return fail('command not found', 127);
    }
  }

  private cat(): Promise<CommandResult> {
    const stdin = this.stdin;
    if (!stdin) return Promise.resolve({ exitCode: 0, oomKilled: false, diskFull: false });
    return new Promise((resolve) => {
      this.onKill = () => {
        stdin.destroy();
        resolve(this.killedResult());
      };
      stdin.on('data', (b: Buffer) => this.stdout.write(b));
      stdin.on('end', () => resolve({ exitCode: 0, oomKilled: false, diskFull: false }));
    });
  }
}

function ended(s: PassThrough): Promise<void> {
  return s.readableEnded ? Promise.resolve() : new Promise((resolve) => s.once('end', () => resolve()).once('close', () => resolve()));
}

export class FakeDriver implements RuntimeDriver {
  readonly name: RuntimeName;
  private readonly caps: RuntimeCapabilities;
  private readonly tasks = new Map<string, FakeTask>();
  private createError?: Error;
  private createHold?: { reached: () => void; released: Promise<void> };
  private readonly localImages: Map<string, RuntimeImage>;
  private readonly registry: Map<string, RuntimeImage | PrismError>;
  /** References pullImage was asked for, in order. */
  readonly pulls: string[] = [];

  constructor(opts: FakeDriverOptions = {}) {
    this.name = opts.name ?? 'oci';
    this.caps = { isolation: 'container', persistentFilesystem: true, survivesDaemonRestart: true, pause: 'ram', ...(opts.ownImages ? { ownImages: true } : {}), ...opts.capabilities };
    this.localImages = new Map(Object.entries(opts.ownImages?.local ?? {}));
    this.registry = new Map(Object.entries(opts.ownImages?.registry ?? {}));
  }

  capabilities(): RuntimeCapabilities {
    return { ...this.caps };
  }

  async probe(): Promise<ProbeResult> {
    return { usable: true, reason: 'in-memory fake driver (unit tests only)' };
  }

  /** The next `create` throws `err` and leaves nothing behind. */
  failNextCreate(err: Error = new PrismError('INTERNAL', 'injected create failure')): void {
    this.createError = err;
  }

  /**
   * The next `create` makes its task (listTasks shows it) and then waits for `release()` before it
   * returns: a create in flight, for races. `reached` resolves once the task exists.
   */
  holdNextCreate(): { reached: Promise<void>; release: () => void } {
    let reached!: () => void;
    let release!: () => void;
    const r = new Promise<void>((res) => (reached = res));
    this.createHold = { reached, released: new Promise<void>((res) => (release = res)) };
    return { reached: r, release };
  }

  /**
   * Puts task `id` in `state` as if that happened while prismd was down: 'stopped' ends its commands
   * and keeps its files, 'gone' is {@link vanish}, 'running' starts it again.
   */
  setRecoverState(id: string, state: TaskState): void {
    if (state === 'gone') return this.vanish(id);
    const t = this.task(id);
    if (state === 'stopped') this.halt(t);
    t.state = state;
  }

  /** Task `id` disappears with its files, as after a host reboot. */
  vanish(id: string): void {
    const t = this.tasks.get(id);
    if (!t) return;
    this.halt(t);
    this.tasks.delete(id);
  }

  async create(spec: TaskSpec): Promise<TaskHandle> {
    const err = this.createError;
    if (err) {
      this.createError = undefined;
      throw err;
    }
    if (this.tasks.has(spec.id)) throw new PrismError('ALREADY_EXISTS', `task ${spec.id} already exists`);
    if (spec.image !== undefined && ![...this.localImages.values()].some((i) => i.id === spec.image)) {
      throw new PrismError('INVALID_ARGUMENT', `the fake runtime has no image ${spec.image}`);
    }
    const handle: TaskHandle = { id: spec.id, runtime: this.name, spec: structuredClone(spec), data: { fake: true } };
    this.tasks.set(spec.id, { handle, state: 'running', files: new Map(), procs: new Set() });
    const hold = this.createHold;
    if (hold) {
      this.createHold = undefined;
      hold.reached();
      await hold.released;
    }
    return structuredClone(handle);
  }

  async start(handle: TaskHandle): Promise<void> {
    this.task(handle.id).state = 'running';
  }

  async recover(handle: TaskHandle): Promise<TaskState> {
    return this.tasks.get(handle.id)?.state ?? 'gone';
  }

  async inspect(handle: TaskHandle): Promise<TaskState> {
    return this.recover(handle);
  }

  async exec(handle: TaskHandle, opts: ExecOptions): Promise<TaskProcess> {
    const t = this.task(handle.id);
    if (t.state !== 'running') throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    return new FakeProcess(t, { ...opts, argv: [...opts.argv], env: { ...opts.env } });
  }

  /** Frozen in place: commands already running keep their state, new ones are refused until resume. */
  async pause(handle: TaskHandle): Promise<void> {
    const t = this.task(handle.id);
    if (t.state === 'stopped') throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    t.state = 'paused';
  }

  async resume(handle: TaskHandle): Promise<void> {
    const t = this.task(handle.id);
    if (t.state === 'stopped') throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    t.state = 'running';
  }

  async stop(handle: TaskHandle): Promise<void> {
    const t = this.task(handle.id);
    this.halt(t);
    t.state = 'stopped';
  }

  async destroy(handle: TaskHandle): Promise<void> {
    this.vanish(handle.id);
  }

  async stats(handle: TaskHandle): Promise<TaskStats> {
    const t = this.task(handle.id);
    if (t.state !== 'running') throw new PrismError('FAILED_PRECONDITION', `task ${handle.id} is not running`);
    return { memoryBytes: 0, memoryLimitBytes: t.handle.spec.memoryMb * 2 ** 20, memoryCacheBytes: 0, cpuUsageNs: 0, pids: t.procs.size, diskUsedBytes: 0, diskTotalBytes: t.handle.spec.diskMb * 2 ** 20 };
  }

  async close(): Promise<void> {}

  async findImage(ref: string): Promise<RuntimeImage | undefined> {
    const image = this.localImages.get(ref);
    return image && structuredClone(image);
  }

  async pullImage(ref: string): Promise<RuntimeImage> {
    this.pulls.push(ref);
    const found = this.registry.get(ref);
    if (found instanceof PrismError) throw found;
    if (!found) throw new PrismError('NOT_FOUND', `pulling '${ref}': the fake registry has no such image`);
    this.localImages.set(ref, found);
    return structuredClone(found);
  }

  async listTasks(): Promise<string[]> {
    return [...this.tasks.keys()];
  }

  /** Files of task `id` (path -> content), for assertions. */
  files(id: string): Map<string, Buffer> {
    return new Map(this.task(id).files);
  }

  private task(id: string): FakeTask {
    const t = this.tasks.get(id);
    if (!t) throw new PrismError('NOT_FOUND', `task ${id} not found`);
    return t;
  }

  private halt(t: FakeTask): void {
    for (const p of t.procs) p.kill('SIGKILL');
  }
}
