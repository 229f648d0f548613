import { isPrismError } from '../core/errors.js';
import type { CommitOp, Store } from './store.js';

export interface GroupCommitLimits {
  /** Most operations in one merged commit (etcd refuses more than --max-txn-ops, 128 by default). */
  maxOps: number;
  /** Most bytes of keys and values in one merged commit (etcd's --max-request-bytes is 1.5 MiB by default). */
  maxBytes: number;
}

/** Below etcd's defaults, so a merged commit is never refused for its size. */
export const DEFAULT_GROUP_LIMITS: GroupCommitLimits = { maxOps: 128, maxBytes: 1 << 20 };

interface Queued {
  ops: CommitOp[];
  keys: string[];
  bytes: number;
  resolve: (revision: number) => void;
  reject: (e: unknown) => void;
}

/**
 * Group commit over any Store: commits issued while one is in flight wait, and go together as the next
 * single `Store.commit`, so concurrent creates on a node cost one round trip (and one raft proposal on
 * etcd) instead of one each. A lone commit goes at once, as it is.
 *
 * What each caller sees is what `Store.commit` of its own operations would give:
 * - Each commit keeps its own comparisons. A Store commit is all or nothing, so a merged commit refused
 *   (CONFLICT, or anything but an unknown outcome) is sent again one commit at a time: only the commits
 *   whose comparisons fail get CONFLICT, the others still land.
 * - An unknown outcome (UNAVAILABLE, DEADLINE_EXCEEDED) reaches every commit of the group, each of which
 *   then re-reads before retrying, as the Store contract asks of any write.
 * - Commits of one group land at one revision, which each is answered with.
 * - A commit touching a key that an earlier queued commit touches waits for a later group (a Store
 *   refuses two writes to one key in one commit), so commits on one key keep their order.
 */
export class GroupCommit {
  private queue: Queued[] = [];
  private flushing = false;
  /** Store commits sent, and how many of them were merged groups refused and re-sent one by one. */
  readonly stats = { sent: 0, merged: 0, splits: 0 };

  constructor(private readonly store: Store, private readonly limits: GroupCommitLimits = DEFAULT_GROUP_LIMITS) {}

  commit(ops: CommitOp[]): Promise<number> {
    return new Promise((resolve, reject) => {
      const keys = Array.isArray(ops) ? ops.map((op) => op?.key) : [];
      const bytes = Array.isArray(ops) ? ops.reduce((n, op) => n + String(op?.key).length + (op?.op === 'put' ? String(op.value).length : 0), 0) : 0;
      this.queue.push({ ops, keys, bytes, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) await this.send(this.take());
    } finally {
      this.flushing = false;
    }
  }

  /** The next group: queued commits in order, within the limits, none touching a key another touches. */
  private take(): Queued[] {
    const group: Queued[] = [];
    const rest: Queued[] = [];
    const touched = new Set<string>();
    let ops = 0;
    let bytes = 0;
    for (const q of this.queue) {
      const fits = group.length === 0 ||
        (ops + q.ops.length <= this.limits.maxOps && bytes + q.bytes <= this.limits.maxBytes && !q.keys.some((k) => touched.has(k)));
      // A commit left for later still claims its keys: a later one on the same key must not overtake it.
      for (const k of q.keys) touched.add(k);
      if (!fits) {
        rest.push(q);
        continue;
      }
      group.push(q);
      ops += q.ops.length;
      bytes += q.bytes;
    }
    this.queue = rest;
    return group;
  }

  private async send(group: Queued[]): Promise<void> {
    this.stats.sent++;
    if (group.length === 1) {
      await this.store.commit(group[0]!.ops).then(group[0]!.resolve, group[0]!.reject);
      return;
    }
    this.stats.merged++;
    try {
      const revision = await this.store.commit(group.flatMap((q) => q.ops));
      for (const q of group) q.resolve(revision);
    } catch (e) {
      if (isPrismError(e, 'UNAVAILABLE') || isPrismError(e, 'DEADLINE_EXCEEDED')) {
        for (const q of group) q.reject(e);
        return;
      }
      // One commit's comparison failed (or its operations were refused): each on its own, so the rest land.
      this.stats.splits++;
      this.stats.sent += group.length;
      await Promise.all(group.map((q) => this.store.commit(q.ops).then(q.resolve, q.reject)));
    }
  }
}
