import { isPrismError, PrismError } from '../core/errors.js';
import type { Reservation } from '../core/types.js';
import type { CommitOp, Store } from '../store/store.js';

interface Queued {
  ops: CommitOp[];
  keys: string[];
  /** Given back (a delete), or taken (a claim: `fits` says whether the reservation has room for it). */
  freed: Reservation;
  fits?: (after: Reservation) => boolean;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** Most operations in one merged round (etcd's --max-txn-ops is 128 by default; one is the reservation). */
const MAX_OPS = 120;

/**
 * Changes to one node's reservation, merged: deletes that give capacity back (`release`) and direct
 * creates that take it (`claim`). Every delete waiting for a node's reservation
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
 * - Pure checks (`op: 'check'`) touch no key: commits checking one key go in one round, and identical
 *   checks are sent once (every direct create of a node checks its member key).
 * Direct creates (a node making a sandbox it runs itself, src/service/direct-create.ts) take capacity the
 * same way (`claim`), in the same rounds: a claim the reservation as read has no room for is refused
 * on its own, the round goes without it.
 */
export class ReservationLedger {
  private readonly queues = new Map<string, Queued[]>();
  private readonly flushing = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly key: (node: string) => string,
  ) {}

  /** Applies `ops` together with `freed` taken from `node`'s reservation (never below zero). */
  release(node: string, ops: CommitOp[], freed: Reservation): Promise<void> {
    return this.enqueue(node, { ops, keys: written(ops), freed });
  }

  /**
   * Applies `ops` together with `wanted` added to `node`'s reservation, provided `fits` holds for the
   * reservation with it added (as read just before the commit, with the claims ahead of it in the round);
   * RESOURCE_EXHAUSTED, with nothing written, when it does not. Same merging as `release`.
   */
  claim(node: string, ops: CommitOp[], wanted: Reservation, fits: (after: Reservation) => boolean): Promise<void> {
    return this.enqueue(node, { ops, keys: written(ops), freed: { cpus: -wanted.cpus, memoryMb: -wanted.memoryMb, sandboxes: -wanted.sandboxes }, fits });
  }

  private enqueue(node: string, item: Omit<Queued, 'resolve' | 'reject'>): Promise<void> {
    return new Promise((resolve, reject) => {
      let q = this.queues.get(node);
      if (!q) this.queues.set(node, (q = []));
      q.push({ ...item, resolve, reject });
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

  private async round(node: string, all: Queued[]): Promise<void> {
    let round = all;
    try {
      let kv = await this.store.get(this.key(node));
      for (let attempt = 0; ; attempt++) {
        const r: Reservation = kv ? JSON.parse(kv.value) : { cpus: 0, memoryMb: 0, sandboxes: 0 };
        round = this.admit(node, r, round);
        if (round.length === 0) return;
        const freed = round.reduce((t, q) => ({ cpus: t.cpus + q.freed.cpus, memoryMb: t.memoryMb + q.freed.memoryMb, sandboxes: t.sandboxes + q.freed.sandboxes }), { cpus: 0, memoryMb: 0, sandboxes: 0 });
        const left: Reservation = {
          cpus: Math.max(0, r.cpus - freed.cpus),
          memoryMb: Math.max(0, r.memoryMb - freed.memoryMb),
          sandboxes: Math.max(0, r.sandboxes - freed.sandboxes),
        };
        const reservation: CommitOp = { op: 'put', key: this.key(node), value: JSON.stringify(left), expectRevision: kv?.modRevision ?? 0 };
        try {
          await this.store.commit([...merged(round.flatMap((q) => q.ops)), reservation]);
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

  /**
   * The round's entries that fit the reservation `r`: releases always, claims in order while the
   * reservation (less the round's releases, plus the claims admitted before) has room for them. The
   * others are answered RESOURCE_EXHAUSTED here.
   */
  private admit(node: string, r: Reservation, round: Queued[]): Queued[] {
    const add = (a: Reservation, b: Reservation): Reservation => ({ cpus: a.cpus + b.cpus, memoryMb: a.memoryMb + b.memoryMb, sandboxes: a.sandboxes + b.sandboxes });
    const neg = (a: Reservation): Reservation => ({ cpus: -a.cpus, memoryMb: -a.memoryMb, sandboxes: -a.sandboxes });
    let at = round.filter((q) => !q.fits).reduce((t, q) => add(t, neg(q.freed)), r);
    const out: Queued[] = [];
    for (const q of round) {
      if (q.fits) {
        const after = add(at, neg(q.freed));
        if (!q.fits(after)) {
          q.reject(new PrismError('RESOURCE_EXHAUSTED', `node ${node} has no room left for the sandbox (reserved: ${r.cpus} CPUs, ${r.memoryMb} MiB, ${r.sandboxes} sandboxes)`));
          continue;
        }
        at = after;
      }
      out.push(q);
    }
    return out;
  }
}

/** The keys `ops` write (checks write none). */
function written(ops: CommitOp[]): string[] {
  return ops.filter((op) => op.op !== 'check').map((op) => op.key);
}

/** `ops` with identical checks sent once. */
function merged(ops: CommitOp[]): CommitOp[] {
  const seen = new Set<string>();
  return ops.filter((op) => {
    if (op.op !== 'check') return true;
    const id = `${op.key}@${op.expectRevision}`;
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}
