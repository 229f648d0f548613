import type { Sandbox } from '../core/types.js';
import type { RuntimeDriver, TaskHandle } from '../runtime/driver.js';
import type { WatchEnd } from '../runtime/pid-watch.js';
import type { Logger } from './logger.js';
import type { SandboxFeed } from './sandbox-metrics.js';

/** What the watchdog needs of the node agent. */
export interface WatchedTasks {
  readonly nodeId: string;
  /** The task handle of a sandbox this node runs (undefined: none). */
  handleOf(id: string): Promise<TaskHandle | undefined>;
  driverOf(h: TaskHandle): RuntimeDriver | undefined;
  /** Checks the task under the sandbox's lock; false (and the sandbox marked failed) when it is gone. */
  checkTask(id: string): Promise<boolean>;
}

export interface TaskWatchdogOptions {
  intervalMs: number;
  /** Every this many rounds: re-list the records and check every running task, watched or not. */
  sweepEvery: number;
}

/**
 * Notices tasks that died under a `running` sandbox (a killed QEMU or runc init, an OOM of PID 1) and
 * has the node agent mark the sandbox `failed`, so it does not look healthy while every exec fails.
 *
 * Event-driven where the driver can watch a task's processes (RuntimeDriver.watchExit: oci through
 * pidfds): a round costs nothing per watched task. Tasks of drivers that cannot watch are checked each
 * round (seemsAlive, else inspect). The running set follows the store's watch (SandboxFeed), with a
 * re-list and a check of every task each `sweepEvery` rounds in case an event or a watch was missed.
 */
export class TaskWatchdog {
  private readonly running = new Set<string>();
  /** Watched tasks, and the handle each watch is on. */
  private readonly watched = new Map<string, TaskHandle>();
  /** Tasks whose driver said they cannot be watched: polled. */
  private readonly unwatchable = new Set<string>();
  private timer?: NodeJS.Timeout;
  private unsubscribe?: () => void;
  private rounds = 0;
  private round?: Promise<void>;

  constructor(
    private readonly feed: SandboxFeed,
    private readonly tasks: WatchedTasks,
    private readonly log: Logger,
    private readonly opts: TaskWatchdogOptions,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = this.feed.onChange((id, sb) => this.follow(id, sb));
    await this.resync();
    this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
    this.timer.unref();
    await this.tick();
  }

  stop(): void {
    clearInterval(this.timer);
    this.unsubscribe?.();
    for (const id of [...this.watched.keys()]) this.unwatch(id);
  }

  /** Sandboxes watched through their driver now (for tests and the density bench). */
  watching(): string[] {
    return [...this.watched.keys()];
  }

  private follow(id: string, sb: Sandbox | undefined): void {
    if (sb && sb.node === this.tasks.nodeId && sb.status === 'running') {
      if (this.running.has(id)) return;
      this.running.add(id);
      // Watched from now, not from the next round (tasks that cannot be watched wait for it).
      if (this.timer) void this.checkOne(id, false, true).catch((e) => this.log.warn({ err: e, sandbox: id }, 'task watchdog failed'));
      return;
    }
    this.running.delete(id);
    this.unwatchable.delete(id);
    this.unwatch(id);
  }

  private unwatch(id: string): void {
    const h = this.watched.get(id);
    if (!h) return;
    this.watched.delete(id);
    this.tasks.driverOf(h)?.unwatchExit?.(h);
  }

  private async resync(): Promise<void> {
    const all = await this.feed.listSandboxes();
    const seen = new Set(all.map((sb) => sb.id));
    for (const id of [...this.running]) if (!seen.has(id)) this.follow(id, undefined);
    for (const sb of all) this.follow(sb.id, sb);
  }

  private tick(): Promise<void> {
    // A round still under way (a slow store): skip rather than pile up.
    this.round ??= this.checkRound()
      .catch((e) => this.log.warn({ err: e }, 'task watchdog failed'))
      .finally(() => (this.round = undefined));
    return this.round;
  }

  private async checkRound(): Promise<void> {
    const sweep = ++this.rounds % this.opts.sweepEvery === 0;
    if (sweep) await this.resync();
    for (const id of [...this.running]) await this.checkOne(id, sweep);
  }

  /** Watches the task if it can be (then nothing more unless `sweep`), else checks it (unless `watchOnly`). */
  private async checkOne(id: string, sweep: boolean, watchOnly = false): Promise<void> {
    if (this.watched.has(id) && !sweep) return;
    const h = await this.tasks.handleOf(id).catch(() => undefined);
    const driver = h && this.tasks.driverOf(h);
    if (watchOnly && !driver?.watchExit) return;
    if (!h || !driver) {
      await this.tasks.checkTask(id);
      return;
    }
    if (!this.watched.has(id) && !this.unwatchable.has(id) && driver.watchExit) {
      this.watched.set(id, h);
      const watching = await driver.watchExit(h, (why) => this.ended(id, h, why)).catch(() => false);
      if (watching) return;
      if (this.watched.get(id) === h) this.watched.delete(id);
      this.unwatchable.add(id);
    }
    if (watchOnly) return;
    if (driver.seemsAlive && (await driver.seemsAlive(h).catch(() => false))) return;
    await this.tasks.checkTask(id);
  }

  /** A watch ended: check the task now; the next round watches it again if it still runs. */
  private ended(id: string, h: TaskHandle, why: WatchEnd): void {
    if (this.watched.get(id) !== h) return;
    this.watched.delete(id);
    if (why === 'unwatchable') this.unwatchable.add(id);
    if (!this.running.has(id)) return;
    void this.tasks.checkTask(id).catch((e) => this.log.warn({ err: e, sandbox: id }, 'task watchdog failed'));
  }
}
