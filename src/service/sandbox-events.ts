import { PrismError } from '../core/errors.js';
import type { Sandbox } from '../core/types.js';
import type { Watch } from '../store/store.js';
import type { Logger } from './logger.js';
import type { SandboxRepo } from './sandbox-repo.js';

/** A change to a sandbox record: `sb` undefined when it was deleted; `revision` the change's. */
export type SandboxChangeListener = (id: string, sb: Sandbox | undefined, revision: number) => void;

/**
 * This node's stream of sandbox record changes, for whoever acts on them (the agent, the scheduler,
 * metrics, the watchdog): one Store watch per node, however many listen.
 */
export interface SandboxFeed {
  /**
   * Calls `fn` with every change seen from now on, in revision order; returns the unsubscribe.
   * `onResync` is called after the watch had to start over (history compacted): changes made meanwhile
   * may have been missed, so a listener that keeps state lists the records again. A listener that
   * lists after subscribing may also hear of changes older than its listing, and tells them by revision.
   */
  onChange(fn: SandboxChangeListener, onResync?: () => void): () => void;
}

/** Waits on one sandbox's record (SandboxEvents.follow). */
export interface SandboxFollower {
  /** The caller's own write of the record: the latest seen unless the watch already delivered a newer one. */
  wrote(sb: Sandbox, revision: number): void;
  /**
   * Resolves with the record once `done(record)` holds (`undefined` = the record is gone), or with the
   * record as it is when `timeoutMs` passes. Checks the latest record seen first; reads the Store only
   * when nothing has been seen yet.
   */
  until(done: (sb: Sandbox | undefined) => boolean, timeoutMs: number): Promise<Sandbox | undefined>;
  /** Stops following (a pending `until` resolves as at its timeout). Idempotent. */
  close(): void;
}

interface Seen {
  sb: Sandbox | undefined;
  /** Infinity for a record found gone by a read: a deleted id never comes back. */
  revision: number;
}

interface Waiter {
  done: (sb: Sandbox | undefined) => boolean;
  resolve: (sb: Sandbox | undefined) => void;
  timer: NodeJS.Timeout;
  since: number;
}

/**
 * The node's one watch on every sandbox record (SandboxFeed), and waits on records reaching a state (a
 * create waiting for `running`, wherever in the cluster it runs). A follower remembers the latest
 * record the watch delivered for its sandbox, so a create that follows its sandbox from before its
 * first write waits without reading the Store at all. A slow poll backs the watch up: a wait that has
 * lasted `pollMs` re-reads the record now and then, so it never hangs on a missed event.
 */
export class SandboxEvents implements SandboxFeed {
  private watch?: Watch;
  private poll?: NodeJS.Timeout;
  private readonly followers = new Map<string, Set<Follower>>();
  private readonly listeners = new Map<SandboxChangeListener, (() => void) | undefined>();

  constructor(private readonly repo: SandboxRepo, private readonly log: Logger, private readonly pollMs = 1000) {}

  async start(): Promise<void> {
    const rev = await this.repo.revision();
    this.watch = this.repo.watchSandboxes(rev, (id, sb, revision) => this.changed(id, sb, revision), (e) => {
      this.log.warn({ err: e }, 'sandbox watch failed: resynchronising');
      this.watch?.close();
      void this.start().then(() => this.resynced(), () => undefined);
    });
    this.poll ??= setInterval(() => void this.recheck(Date.now() - this.pollMs), this.pollMs);
    this.poll.unref();
  }

  stop(): void {
    this.watch?.close();
    clearInterval(this.poll);
    for (const set of [...this.followers.values()]) for (const f of [...set]) f.close();
  }

  /** Follows sandbox `id` from now on: call before the write whose outcome will be waited for. */
  follow(id: string): SandboxFollower {
    const f = new Follower(id, this.repo, () => {
      const set = this.followers.get(id);
      set?.delete(f);
      if (set?.size === 0) this.followers.delete(id);
    });
    let set = this.followers.get(id);
    if (!set) this.followers.set(id, (set = new Set()));
    set.add(f);
    return f;
  }

  /** One wait on a record that exists (it is read at once): `follow(id).until(...)`, then closed. */
  async waitFor(id: string, done: (sb: Sandbox | undefined) => boolean, timeoutMs: number): Promise<Sandbox | undefined> {
    const f = this.follow(id);
    try {
      return await f.until(done, timeoutMs);
    } finally {
      f.close();
    }
  }

  onChange(fn: SandboxChangeListener, onResync?: () => void): () => void {
    this.listeners.set(fn, onResync);
    return () => this.listeners.delete(fn);
  }

  private changed(id: string, sb: Sandbox | undefined, revision: number): void {
    for (const fn of [...this.listeners.keys()]) {
      try {
        fn(id, sb, revision);
      } catch (e) {
        this.log.error({ err: e, sandbox: id }, 'sandbox change listener failed');
      }
    }
    for (const f of this.followers.get(id) ?? []) f.saw(sb, revision);
  }

  private async resynced(): Promise<void> {
    for (const onResync of [...this.listeners.values()]) {
      try {
        onResync?.();
      } catch (e) {
        this.log.error({ err: e }, 'sandbox resync listener failed');
      }
    }
    await this.recheck(Infinity);
  }

  /** Re-reads the records of waits begun before `before` (Infinity: every wait). */
  private async recheck(before: number): Promise<void> {
    for (const set of [...this.followers.values()]) {
      for (const f of [...set]) if (f.waitingSince() < before) await f.refresh();
    }
  }
}

class Follower implements SandboxFollower {
  private latest?: Seen;
  private waiter?: Waiter;
  private closed = false;

  constructor(private readonly id: string, private readonly repo: SandboxRepo, private readonly onClose: () => void) {}

  wrote(sb: Sandbox, revision: number): void {
    this.saw(sb, revision);
  }

  saw(sb: Sandbox | undefined, revision: number): void {
    if (this.latest && this.latest.revision >= revision) return;
    this.latest = { sb, revision };
    if (this.waiter?.done(sb)) this.settle(sb);
  }

  until(done: (sb: Sandbox | undefined) => boolean, timeoutMs: number): Promise<Sandbox | undefined> {
    if (this.waiter) throw new PrismError('INTERNAL', 'a sandbox follower waits for one thing at a time');
    return new Promise((resolve) => {
      if (this.closed) return resolve(this.latest?.sb);
      this.waiter = {
        done,
        resolve,
        since: Date.now(),
        timer: setTimeout(() => void this.repo.getSandbox(this.id).then((cur) => this.settle(cur?.value), () => this.settle(this.latest?.sb)), timeoutMs),
      };
      if (!this.latest) void this.refresh();
      else if (done(this.latest.sb)) this.settle(this.latest.sb);
    });
  }

  /** When the current wait began; Infinity when nothing is waited for. */
  waitingSince(): number {
    return this.waiter?.since ?? Infinity;
  }

  async refresh(): Promise<void> {
    const cur = await this.repo.getSandbox(this.id).catch(() => null);
    if (cur !== null) this.saw(cur?.value, cur ? cur.revision : Infinity);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.settle(this.latest?.sb);
    this.onClose();
  }

  private settle(sb: Sandbox | undefined): void {
    const w = this.waiter;
    if (!w) return;
    this.waiter = undefined;
    clearTimeout(w.timer);
    w.resolve(sb);
  }
}
