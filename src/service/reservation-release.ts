import { isPrismError } from '../core/errors.js';
import type { Reservation } from '../core/types.js';
import type { CommitOp, Store } from '../store/store.js';

interface Queued {
  ops: CommitOp[];
  keys: string[];
  freed: Reservation;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** Most operations in one merged release (etcd's --max-txn-ops is 128 by default; one is the reservation). */
const MAX_OPS = 120;

/**
 * Deletes that give capacity back to one node, merged: every delete waiting for a node's reservation
 * key goes in one commit that subtracts what all of them free, compared with the reservation as read
 * just before. Concurrent deletes of one node used to race for that key, each a read and a
 * compare-and-swap, mostly refused and retried (about 6 commits and 12 reads per delete at 64 in
 * flight); now they queue behind one read and one commit per round.
 *
 * What each caller sees is what a commit of its own operations plus its own decrement would give:
 * - The commit lands whole or not at all. A refusal (CONFLICT) after which the reservation is found
 *   unchanged means one of the deletes' own comparisons failed: every caller of the round gets
 *   CONFLICT and re-reads, as after a CONFLICT of its own. A reservation that moved on (a placement,
 *   or a delete through another node) is read again and the round sent again.
 * - An unknown outcome (UNAVAILABLE, DEADLINE_EXCEEDED) reaches every caller of the round.
 * - Deletes touching a key another queued delete touches (a shared volume) go in a later round.
 */
export class ReservationRelease {
  private readonly queues = new Map<string, Queued[]>();
  private readonly flushing = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly key: (node: string) => string,
  ) {}

  /** Applies `ops` together with `freed` taken from `node`'s reservation (never below zero). */
  release(node: string, ops: CommitOp[], freed: Reservation): Promise<void> {
    return new Promise((resolve, reject) => {
      let q = this.queues.get(node);
      if (!q) this.queues.set(node, (q = []));
      q.push({ ops, keys: ops.map((op) => op.key), freed, resolve, reject });
      if (!this.flushing.has(node)) void this.flush(node);
    });
  }

  private async flush(node: string): Promise<void> {
    this.flushing.add(node);
    try {
      for (let q = this.queues.get(node); q && q.length > 0; q = this.queues.get(node)) await this.round(node, this.take(node, q));
    } finally {
      this.flushing.delete(node);
      if (this.queues.get(node)?.length === 0) this.queues.delete(node);
    }
  }

  /** The next round: queued deletes in order, within the op limit, no two touching one key. */
  private take(node: string, queue: Queued[]): Queued[] {
    const round: Queued[] = [];
    const rest: Queued[] = [];
    const touched = new Set<string>();
    let ops = 0;
    for (const q of queue) {
      const fits = round.length === 0 || (ops + q.ops.length <= MAX_OPS && !q.keys.some((k) => touched.has(k)));
      for (const k of q.keys) touched.add(k);
      if (!fits) {
        rest.push(q);
        continue;
      }
      round.push(q);
      ops += q.ops.length;
    }
    this.queues.set(node, rest);
    return round;
  }

  private async round(node: string, round: Queued[]): Promise<void> {
    const freed = round.reduce((t, q) => ({ cpus: t.cpus + q.freed.cpus, memoryMb: t.memoryMb + q.freed.memoryMb, sandboxes: t.sandboxes + q.freed.sandboxes }), { cpus: 0, memoryMb: 0, sandboxes: 0 });
    try {
      let kv = await this.store.get(this.key(node));
      for (let attempt = 0; ; attempt++) {
        const r: Reservation = kv ? JSON.parse(kv.value) : { cpus: 0, memoryMb: 0, sandboxes: 0 };
        const left: Reservation = {
          cpus: Math.max(0, r.cpus - freed.cpus),
          memoryMb: Math.max(0, r.memoryMb - freed.memoryMb),
          sandboxes: Math.max(0, r.sandboxes - freed.sandboxes),
        };
        const reservation: CommitOp = { op: 'put', key: this.key(node), value: JSON.stringify(left), expectRevision: kv?.modRevision ?? 0 };
        try {
          await this.store.commit([...round.flatMap((q) => q.ops), reservation]);
          for (const q of round) q.resolve();
          return;
        } catch (e) {
          if (!isPrismError(e, 'CONFLICT') || attempt >= 20) throw e;
          // Only the reservation moved on: resend with it as it is now. Else a delete's own comparison failed.
          const now = await this.store.get(this.key(node));
          if (now?.modRevision === kv?.modRevision) throw e;
          kv = now;
        }
      }
    } catch (e) {
      for (const q of round) q.reject(e);
    }
  }
}
