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

/** A new sandbox handed to the leader to be placed without a `pending` record first (Scheduler.place). */
interface Fresh {
  sb: Sandbox;
  /** Undefined: not written, this node no longer leads. */
  resolve: (placed: Versioned<Sandbox> | undefined) => void;
  reject: (e: unknown) => void;
  /** In the batch being committed: its outcome answers it, even past the deadline. */
  inFlight: boolean;
  /** Past its deadline: answered with UNAVAILABLE unless the batch carrying it commits. */
  expired: boolean;
  timer: NodeJS.Timeout;
}

const placeTimedOut = () => new PrismError('UNAVAILABLE', 'the scheduler could not place the sandbox in time; try again', { retryAfterSec: 5 });

/** Statuses in which a sandbox on a dead node becomes `lost`. */
const LOSABLE: readonly Sandbox['status'][] = ['scheduled', 'starting', 'running', 'stopping', 'stopped', 'pausing', 'paused', 'resuming'];

/**
 * The leader loop. Runs only on the elected leader, for one term: it watches for `pending` sandboxes,
 * places them in batches (every sandbox queued while the previous transaction was in flight goes into
 * the next one), and marks the sandboxes of dead nodes `lost`. Every placement transaction checks the
 * term, so a deposed leader's last batch fails instead of double-placing.
 *
 * A create made on the leader skips the `pending` record (place): the new record is written by the
 * placement transaction itself, already `scheduled` (or `failed`), with its name, in the same batches.
 */
export class Scheduler {
  private readonly queue = new Map<string, Versioned<Sandbox>>();
  /** New sandboxes handed to place(), by id: written by the next batch that has room. */
  private readonly fresh = new Map<string, Fresh>();
  /** The term's view and first listing are done: place() is taken (false whenever there is no term). */
  private ready = false;
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
      if (this.term === term) this.ready = true;
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
    this.ready = false;
    // Not written (a batch in flight, if any, fails its term check): the callers write them `pending`.
    for (const f of this.fresh.values()) {
      clearTimeout(f.timer);
      f.resolve(undefined);
    }
    this.fresh.clear();
  }

  /** Whether place() takes sandboxes now: this node leads and its term's view is ready. */
  get placesNew(): boolean {
    return this.ready;
  }

  /**
   * Places a new sandbox (status `pending`, never written) in the next batch: the record is created
   * by the placement transaction, `scheduled` on a node or `failed` with the reason, and its name key
   * with it. Resolves with the record as written, or undefined when this node does not lead (or stops
   * leading before a batch wrote it: then none did), for the caller to write it `pending` instead.
   * Rejects with ALREADY_EXISTS when the name is taken, UNAVAILABLE when no batch could write it
   * within `timeoutMs`.
   */
  place(sb: Sandbox, timeoutMs: number): Promise<Versioned<Sandbox> | undefined> {
    if (!this.placesNew) return Promise.resolve(undefined);
    if (this.fresh.has(sb.id)) return Promise.reject(new PrismError('ALREADY_EXISTS', `sandbox '${sb.id}' is already being placed`));
    return new Promise((resolve, reject) => {
      const f: Fresh = {
        sb, resolve, reject, inFlight: false, expired: false,
        timer: setTimeout(() => {
          f.expired = true;
          if (!f.inFlight) this.answer(f, { error: placeTimedOut() });
        }, timeoutMs),
      };
      this.fresh.set(sb.id, f);
      if (!this.draining) void this.drain();
    });
  }

  /** Up to `n` fresh sandboxes for a batch, no two claiming one name (a transaction touches a key once). */
  private takeFresh(n: number): Fresh[] {
    const names = new Set<string>();
    const out: Fresh[] = [];
    for (const f of this.fresh.values()) {
      if (out.length >= n) break;
      if (names.has(f.sb.name)) continue;
      names.add(f.sb.name);
      out.push(f);
    }
    return out;
  }

  private answer(f: Fresh, outcome: { placed: Versioned<Sandbox> } | { error: unknown }): void {
    clearTimeout(f.timer);
    this.fresh.delete(f.sb.id);
    if ('placed' in outcome) f.resolve(outcome.placed);
    else f.reject(outcome.error);
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
      while ((this.queue.size > 0 || this.fresh.size > 0) && this.term !== undefined && this.view) {
        let batch: Versioned<Sandbox>[] = [];
        let fresh: Fresh[] = [];
        /** The nodes as the batch was placed on, for telling a stale reservation after a refusal. */
        const on = { nodes: [] as ViewNode[] };
        const view = this.view;
        try {
          on.nodes = await view.alive();
          // A queued sandbox costs one operation (its record), a fresh one two (record and name).
          const room = Math.max(2, this.opts.maxTxnOps - 1 - on.nodes.length);
          const max = Math.max(1, this.opts.batchMax);
          fresh = this.takeFresh(Math.min(max, Math.floor(room / 2)));
          batch = [...this.queue.values()].slice(0, Math.max(fresh.length ? 0 : 1, Math.min(max - fresh.length, room - 2 * fresh.length)));
          for (const f of fresh) f.inFlight = true;
          const written = await this.placeAndCommit(batch, fresh, on, this.term, view);
          for (const s of batch) if (this.queue.get(s.value.id) === s) this.queue.delete(s.value.id);
          for (const f of fresh) this.answer(f, { placed: written.get(f.sb.id)! });
        } catch (e) {
          await this.afterFailedCommit(batch, fresh, on.nodes, view, e);
        }
        for (const f of fresh) {
          f.inFlight = false;
          // Past its deadline while in flight and not written: answered now.
          if (f.expired && this.fresh.get(f.sb.id) === f) this.answer(f, { error: placeTimedOut() });
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** Places the batch and writes it; the fresh sandboxes' records as written, by id. */
  private async placeAndCommit(queued: Versioned<Sandbox>[], fresh: Fresh[], on: { nodes: ViewNode[] }, term: number, view: ClusterView): Promise<Map<string, Versioned<Sandbox>>> {
    // A fresh sandbox is written for the first time: expected absent (revision 0).
    const batch = [...queued, ...fresh.map((f): Versioned<Sandbox> => ({ value: f.sb, revision: 0 }))];
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
    const revision = await this.repo.commitPlacement(term, updates, res, fresh.map((f) => f.sb));
    view.committed(res, revision);
    this.stats.batches++;
    for (const u of updates) {
      if (u.value.status === 'scheduled') this.stats.placed++;
      else this.stats.refused++;
    }
    this.log.debug({ batch: batch.length, fresh: fresh.length, term }, 'placed a batch');
    const written = new Map<string, Versioned<Sandbox>>();
    for (const u of updates.slice(queued.length)) written.set(u.value.id, { value: u.value, revision });
    return written;
  }

  /**
   * A compared key changed: stop if deposed; else, when a reservation the batch grew had moved on (a
   * delete gave capacity back before the view heard of it), try again with the view refreshed; else
   * drop the batch's sandboxes that are no longer pending.
   */
  private async afterFailedCommit(batch: Versioned<Sandbox>[], fresh: Fresh[], nodes: ViewNode[], view: ClusterView, e: unknown): Promise<void> {
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
    if (!(await this.settleFresh(fresh))) return;
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

  /**
   * After a refused batch, the fresh sandboxes that cannot go again as they are: one already written
   * (by an earlier attempt whose answer was lost) is answered with its record, one whose name is
   * taken with ALREADY_EXISTS. False when they could not be read (the next round tries again).
   */
  private async settleFresh(fresh: Fresh[]): Promise<boolean> {
    for (const f of fresh) {
      if (this.fresh.get(f.sb.id) !== f) continue;
      const [cur, owner] = await Promise.all([this.repo.getSandbox(f.sb.id), this.repo.idForName(f.sb.name)]).catch((err: unknown) => [err as Error, undefined] as const);
      if (cur instanceof Error) {
        this.log.warn({ err: cur }, 'reading a refused placement back failed; retrying');
        await new Promise((r) => setTimeout(r, 200));
        return false;
      }
      if (cur) this.answer(f, { placed: cur });
      else if (owner !== undefined && owner !== f.sb.id) this.answer(f, { error: new PrismError('ALREADY_EXISTS', `a sandbox named '${f.sb.name}' already exists`) });
    }
    return true;
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
