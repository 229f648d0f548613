import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Why a watch ended: the process exited, the watch was lost with the helper, or it cannot be watched. */
export type WatchEnd = 'exited' | 'lost' | 'unwatchable';

interface WatchLogger {
  warn(o: object, msg?: string): void;
  error(o: object, msg?: string): void;
}

/** Helper restarts allowed before watching is given up for good (callers then poll). */
const MAX_RESTARTS = 5;

/**
 * Process exits as events, for every task of a driver at once: one `prism-init pidwatch` helper
 * (guest/init/pid-watch.c) holds a pidfd per watched process, so the daemon does not poll each task.
 * Each watch ends once: `exited`; `lost` (the helper died: check and watch again); `unwatchable` (no
 * pidfd on this kernel, no fds left: poll that task instead). `watch` answers false when watching is
 * not possible at all.
 */
export class PidWatcher {
  private helper?: ChildProcess;
  private restarts = 0;
  private closed = false;
  private readonly watches = new Map<string, (why: WatchEnd) => void>();

  constructor(private readonly binary: string, private readonly log?: WatchLogger) {}

  /** Calls `onEnd` once, when process `pid` ends (at once if it already has); replaces a watch under the same key. */
  watch(key: string, pid: number, onEnd: (why: WatchEnd) => void): boolean {
    if (!/^[\w.-]{1,127}$/.test(key) || !Number.isInteger(pid) || pid <= 1) return false;
    const helper = this.start();
    if (!helper?.stdin?.writable) return false;
    if (this.watches.has(key)) helper.stdin.write(`- ${key}\n`);
    this.watches.set(key, onEnd);
    helper.stdin.write(`+ ${key} ${pid}\n`);
    return true;
  }

  unwatch(key: string): void {
    if (!this.watches.delete(key)) return;
    if (this.helper?.stdin?.writable) this.helper.stdin.write(`- ${key}\n`);
  }

  /** Keys watched now (for tests and leak checks). */
  watched(): string[] {
    return [...this.watches.keys()];
  }

  close(): void {
    this.closed = true;
    this.watches.clear();
    const h = this.helper;
    this.helper = undefined;
    h?.stdin?.end();
    h?.kill('SIGTERM');
  }

  private start(): ChildProcess | undefined {
    if (this.helper || this.closed || this.restarts > MAX_RESTARTS) return this.helper;
    const child = spawn(this.binary, ['pidwatch'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.helper = child;
    // The helper never holds its process open by itself (a bench or tool that does not close the driver).
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
    child.stdin.on('error', () => undefined);
    child.stderr.on('data', (b: Buffer) => this.log?.warn({ helper: 'pidwatch' }, b.toString().trim()));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const [what, key] = line.split(' ');
      if (what === 'gone' && key) this.end(key, 'exited');
      else if (what === 'nowatch' && key) this.end(key, 'unwatchable');
    });
    child.on('error', (e) => this.log?.warn({ err: e }, 'process watcher failed: task processes are polled'));
    child.on('close', (code, signal) => {
      if (this.helper !== child) return;
      this.helper = undefined;
      this.restarts++;
      this.log?.warn({ code, signal }, 'process watcher ended: its watches are rechecked');
      for (const key of [...this.watches.keys()]) this.end(key, this.restarts > MAX_RESTARTS ? 'unwatchable' : 'lost');
    });
    return child;
  }

  private end(key: string, why: WatchEnd): void {
    const fn = this.watches.get(key);
    if (!fn) return;
    this.watches.delete(key);
    try {
      fn(why);
    } catch (e) {
      this.log?.error({ err: e, key }, 'process watch callback failed');
    }
  }
}
