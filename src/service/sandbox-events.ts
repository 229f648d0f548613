import type { Sandbox } from '../core/types.js';
import type { Watch } from '../store/store.js';
import type { Logger } from './logger.js';
import type { SandboxRepo } from './sandbox-repo.js';

interface Waiter {
  done: (sb: Sandbox | undefined) => boolean;
  resolve: (sb: Sandbox | undefined) => void;
  timer: NodeJS.Timeout;
}

/**
 * One watch on every sandbox record, shared by all callers waiting for a sandbox to reach a state
 * (a create waiting for `running`, wherever in the cluster it runs). A slow poll backs the watch up,
 * so a waiter never hangs on a missed event.
 */
export class SandboxEvents {
  private watch?: Watch;
  private poll?: NodeJS.Timeout;
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly listeners = new Set<(id: string, sb: Sandbox | undefined) => void>();

  constructor(private readonly repo: SandboxRepo, private readonly log: Logger, private readonly pollMs = 1000) {}

  async start(): Promise<void> {
    const rev = await this.repo.revision();
    this.watch = this.repo.watchSandboxes(rev, (id, sb) => this.changed(id, sb), (e) => {
      this.log.warn({ err: e }, 'sandbox watch failed: resynchronising');
      this.watch?.close();
      void this.start().then(() => this.recheckAll(), () => undefined);
    });
    this.poll ??= setInterval(() => void this.recheckAll(), this.pollMs);
    this.poll.unref();
  }

  stop(): void {
    this.watch?.close();
    clearInterval(this.poll);
    for (const [id, set] of this.waiters) for (const w of set) this.settle(id, w, undefined, true);
  }

  /**
   * Resolves with the record once `done(record)` holds (`undefined` = the record is gone), or with the
   * last seen record when `timeoutMs` passes. Call after the record exists (it is checked at once).
   */
  waitFor(id: string, done: (sb: Sandbox | undefined) => boolean, timeoutMs: number): Promise<Sandbox | undefined> {
    return new Promise((resolve) => {
      const w: Waiter = {
        done,
        resolve,
        timer: setTimeout(() => {
          void this.repo.getSandbox(id).then((cur) => this.settle(id, w, cur?.value, true), () => this.settle(id, w, undefined, true));
        }, timeoutMs),
      };
      let set = this.waiters.get(id);
      if (!set) this.waiters.set(id, (set = new Set()));
      set.add(w);
      void this.repo.getSandbox(id).then((cur) => this.deliver(id, cur?.value), () => undefined);
    });
  }

  /**
   * Calls `fn` with every change the watch sees (`undefined`: the record was deleted); returns the
   * unsubscribe. Changes made while the watch resynchronises after a failure can be missed: a
   * listener that keeps state re-lists now and then.
   */
  onChange(fn: (id: string, sb: Sandbox | undefined) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private changed(id: string, sb: Sandbox | undefined): void {
    for (const fn of this.listeners) {
      try {
        fn(id, sb);
      } catch (e) {
        this.log.error({ err: e, sandbox: id }, 'sandbox change listener failed');
      }
    }
    this.deliver(id, sb);
  }

  private deliver(id: string, sb: Sandbox | undefined): void {
    for (const w of [...(this.waiters.get(id) ?? [])]) if (w.done(sb)) this.settle(id, w, sb, false);
  }

  private settle(id: string, w: Waiter, sb: Sandbox | undefined, force: boolean): void {
    const set = this.waiters.get(id);
    if (!set?.has(w) || (!force && !w.done(sb))) return;
    set.delete(w);
    if (set.size === 0) this.waiters.delete(id);
    clearTimeout(w.timer);
    w.resolve(sb);
  }

  private async recheckAll(): Promise<void> {
    for (const id of [...this.waiters.keys()]) {
      const cur = await this.repo.getSandbox(id).catch(() => null);
      if (cur !== null) this.deliver(id, cur?.value);
    }
  }
}
