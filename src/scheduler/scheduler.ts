import { PrismError, isPrismError } from '../core/errors.js';
import type { Reservation, Sandbox } from '../core/types.js';
import type { Logger } from '../service/logger.js';
import type { SandboxFeed } from '../service/sandbox-events.js';
import type { SandboxRepo, Versioned } from '../service/sandbox-repo.js';
import { ClusterView, type ViewNode } from './cluster-view.js';
import { placeBatch, type PlacementOptions } from './placement.js';

export interface SchedulerOptions extends PlacementOptions {
  /** Most sandboxes placed in one transaction. */
  batchMax: number;
  /**
   * Most operations the Store takes in one transaction (etcd's --max-txn-ops, 128 by default). A batch
   * of n sandboxes on k nodes costs 1 + n + k operations, so batches shrink to fit.
   */
  maxTxnOps: number;
}

/** Statuses in which a sandbox on a dead node becomes `lost`. */
const LOSABLE: readonly Sandbox['status'][] = ['scheduled', 'starting', 'running', 'stopping', 'stopped', 'pausing', 'paused', 'resuming'];

/**
 * The leader loop. Runs only on the elected leader, for one term: it watches for `pending` sandboxes,
 * places them in batches (every sandbox queued while the previous transaction was in flight goes into
 * the next one), and marks the sandboxes of dead nodes `lost`. Every placement transaction checks the
 * term, so a deposed leader's last batch fails instead of double-placing.
 */
export class Scheduler {
  private readonly queue = new Map<string, Versioned<Sandbox>>();
  /** Nodes, liveness and reservations for this term, kept from watches (not listed per batch). */
  private view?: ClusterView;
  private unsubscribe?: () => void;
  private term?: number;
  private draining = false;
  /** Batches committed and sandboxes placed in this term (for `info` and the bench). */
  readonly stats = { batches: 0, placed: 0, refused: 0 };

  constructor(
    private readonly repo: SandboxRepo,
    /** The node's sandbox feed: the scheduler adds no watch of its own on sandbox records. */
    private readonly feed: SandboxFeed,
    private readonly log: Logger,
    private readonly opts: SchedulerOptions,
  ) {}

  async start(term: number): Promise<void> {
    this.stop();
    this.term = term;
    // Before the feed, so that a batch drained at once waits for the view's first listing.
    const view = new ClusterView(this.repo, (node) => {
      this.markLost(node, term).catch((e) => this.log.warn({ err: e, node }, 'marking a dead node\'s sandboxes lost failed'));
    }, (e) => this.restart(term, e));
    this.view = view;
    // The feed may still deliver changes older than the listing below: enqueue() keeps the newer
    // record, and a placement from an old one fails its comparison and is dropped (afterFailedCommit).
    this.unsubscribe = this.feed.onChange((id, sb, revision) => {
      if (sb?.status === 'pending') this.enqueue({ value: sb, revision });
      else this.queue.delete(id);
    }, () => this.restart(term, new PrismError('UNAVAILABLE', 'the sandbox feed started over')));
    try {
      const rev = await this.repo.revision();
      if (this.term !== term) return;
      await view.start(rev);
      if (this.term !== term) return;
      for (const s of await this.repo.listSandboxesVersioned()) {
        if (s.value.status === 'pending' && !this.queue.has(s.value.id)) this.enqueue(s);
      }
      for (const node of view.deadNodes()) await this.markLost(node, term);
    } catch (e) {
      if (this.term !== term) return; // stopped meanwhile (the view closed under the listing)
      // A term whose first listing failed places nothing: start it over shortly.
      setTimeout(() => this.restart(term, e as Error), 200).unref();
      throw e;
    }
  }

  /** A watch failed or the feed started over (history compacted): start the term over from a fresh listing. */
  private restart(term: number, e: Error): void {
    if (this.term !== term) return;
    this.log.warn({ err: e }, 'scheduler watch failed: resynchronising');
    void this.start(term).catch((err) => this.log.error({ err }, 'scheduler resync failed'));
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.view?.close();
    this.view = undefined;
    this.queue.clear();
    this.term = undefined;
  }

  private enqueue(s: Versioned<Sandbox>): void {
    const known = this.queue.get(s.value.id);
    if (known && known.revision >= s.revision) return;
    this.queue.set(s.value.id, s);
    if (!this.draining) void this.drain();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.size > 0 && this.term !== undefined && this.view) {
        let batch: Versioned<Sandbox>[] = [];
        /** The nodes as the batch was placed on, for telling a stale reservation after a refusal. */
        const on = { nodes: [] as ViewNode[] };
        const view = this.view;
        try {
          on.nodes = await view.alive();
          const room = this.opts.maxTxnOps - 1 - on.nodes.length;
          batch = [...this.queue.values()].slice(0, Math.max(1, Math.min(this.opts.batchMax, room)));
          await this.placeAndCommit(batch, on, this.term, view);
          for (const s of batch) if (this.queue.get(s.value.id) === s) this.queue.delete(s.value.id);
        } catch (e) {
          await this.afterFailedCommit(batch, on.nodes, view, e);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private async placeAndCommit(batch: Versioned<Sandbox>[], on: { nodes: ViewNode[] }, term: number, view: ClusterView): Promise<void> {
    const reqs = batch.map((s) => ({ id: s.value.id, runtime: s.value.runtime, cpus: s.value.cpus, memoryMb: s.value.memoryMb, diskMb: s.value.diskMb, ...(s.value.nodeSelector ? { nodeSelector: s.value.nodeSelector } : {}), ...((s.value.volumeNode ?? s.value.imageNode) ? { node: (s.value.volumeNode ?? s.value.imageNode)! } : {}) }));
    let { decisions, reserved } = placeBatch(reqs, on.nodes, this.opts);
    // A refusal is final for the sandbox: first make sure the view is not behind a delete that gave
    // capacity back, or a node that joined, moments ago.
    if ([...decisions.values()].some((d) => 'error' in d)) {
      await view.refreshReservations(new Map());
      on.nodes = await view.alive();
      ({ decisions, reserved } = placeBatch(reqs, on.nodes, this.opts));
    }
    const reservationRevs = new Map(on.nodes.map((n) => [n.id, n.reservationRevision]));
    const updates = batch.map((s): Versioned<Sandbox> => {
      const d = decisions.get(s.value.id)!;
      const next: Sandbox = 'node' in d ? { ...s.value, status: 'scheduled', node: d.node } : { ...s.value, status: 'failed', error: d.error };
      return { value: next, revision: s.revision };
    });
    const res: { node: string; value: Reservation; revision: number }[] = [...reserved].map(([node, value]) => ({ node, value, revision: reservationRevs.get(node)! }));
    const revision = await this.repo.commitPlacement(term, updates, res);
    view.committed(res, revision);
    this.stats.batches++;
    for (const u of updates) {
      if (u.value.status === 'scheduled') this.stats.placed++;
      else this.stats.refused++;
    }
    this.log.debug({ batch: batch.length, term }, 'placed a batch');
  }

  /**
   * A compared key changed: stop if deposed; else, when a reservation the batch grew had moved on (a
   * delete gave capacity back before the view heard of it), try again with the view refreshed; else
   * drop the batch's sandboxes that are no longer pending.
   */
  private async afterFailedCommit(batch: Versioned<Sandbox>[], nodes: ViewNode[], view: ClusterView, e: unknown): Promise<void> {
    if (!isPrismError(e, 'CONFLICT')) {
      this.log.warn({ err: e }, 'placement commit failed; retrying');
      await new Promise((r) => setTimeout(r, 200));
      return;
    }
    const leader = await this.repo.leader().catch(() => undefined);
    if (!leader || leader.revision !== this.term) {
      this.log.warn({ term: this.term }, 'placement refused: no longer the leader');
      this.stop();
      return;
    }
    const used = new Map(nodes.map((n) => [n.id, n.reservationRevision]));
    if (await view.refreshReservations(used).catch(() => false)) return;
    for (const s of batch) {
      const cur = await this.repo.getSandbox(s.value.id).catch((err: unknown) => err as Error);
      // Unreadable now: the next round tries the batch again (and comes back here if it is stale).
      if (cur instanceof Error) {
        this.log.warn({ err: cur }, 'reading a refused placement back failed; retrying');
        await new Promise((r) => setTimeout(r, 200));
        return;
      }
      if (this.queue.get(s.value.id) !== s) continue; // a newer event already replaced it
      if (cur?.value.status === 'pending') this.queue.set(s.value.id, cur);
      else this.queue.delete(s.value.id);
    }
  }

  /** A node's lease ran out: its sandboxes are `lost` (kept, not deleted) until it returns. */
  private async markLost(node: string, term: number): Promise<void> {
    if (this.term !== term) return;
    const at = new Date().toISOString();
    let n = 0;
    for (const sb of await this.repo.listSandboxes()) {
      if (sb.node !== node || !LOSABLE.includes(sb.status)) continue;
      await this.repo
        .transition(sb.id, LOSABLE, 'lost', (s) => ({ ...s, error: { code: 'NODE_LOST', message: `node ${node} stopped renewing its lease at ${at} (the sandbox was ${s.status})` } }), { quiet: true })
        .then((done) => void (done && n++), (e) => this.log.warn({ err: e, sandbox: sb.id }, 'marking a sandbox lost failed'));
    }
    if (n) this.log.warn({ node, sandboxes: n }, 'node is dead: its sandboxes are marked lost');
  }
}
