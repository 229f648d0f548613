import type { NodeInfo, Reservation } from '../core/types.js';
import { PrismError } from '../core/errors.js';
import type { NodeStateChange, SandboxRepo, Versioned } from '../service/sandbox-repo.js';
import type { Watch } from '../store/store.js';
import type { PlacementNode } from './placement.js';

/** An alive node as placement sees it, with the revision its reservation was known at (0: no key). */
export type ViewNode = PlacementNode & { reservationRevision: number };

/**
 * The latest value of each key of one kind, from a listing and a watch that may overlap in either
 * order: news older than what is known of a key (a put or a delete) is dropped, so a listing that
 * answers after a newer watch event cannot bring back an old value or a deleted key.
 */
class Latest<T> {
  readonly live = new Map<string, Versioned<T>>();
  /** When each key was last deleted: a put older than that is stale. Node ids only, so it stays small. */
  private readonly gone = new Map<string, number>();

  /** Applies a put (`value`) or a delete (undefined) seen at `revision`; false when it was old news. */
  apply(id: string, value: T | undefined, revision: number): boolean {
    if (revision <= Math.max(this.live.get(id)?.revision ?? 0, this.gone.get(id) ?? 0)) return false;
    if (value === undefined) {
      this.live.delete(id);
      this.gone.set(id, revision);
    } else {
      this.live.set(id, { value, revision });
    }
    return true;
  }
}

/**
 * The scheduler leader's (and a direct-creating node's, src/service/direct-create.ts) picture of the nodes: their records, which are alive (member keys) and what
 * placement reserved on each, kept from watches instead of listed for every batch. One listing seeds
 * it and a watch from a revision read before that listing keeps it, so nothing after that revision is
 * missed. It may lag the Store by a watch delivery; placement stays correct because its transaction
 * compares every reservation it grows with the revision the view held (a stale one is a CONFLICT, after
 * which the scheduler calls `refreshReservations`), and the leader's own commits enter the view as
 * soon as they land (`committed`).
 */
export class ClusterView {
  private readonly nodes = new Latest<NodeInfo>();
  private readonly members = new Latest<true>();
  private readonly reservations = new Latest<Reservation>();
  private watch?: Watch;
  private closed = false;
  /** The first listing is in and the view is not closed. */
  private ready = false;
  /** Settles once: with the first listing in, or refused when the view closes or cannot list. */
  private readonly loaded: Promise<void>;
  private settleLoaded!: (e?: Error) => void;

  constructor(
    private readonly repo: SandboxRepo,
    /** A node's member key went away (its lease ran out or it left): seen once per disappearance. */
    private readonly onNodeGone: (node: string) => void,
    /** The watch stopped (history compacted): the view is no longer kept, start over with a new one. */
    private readonly onError: (e: PrismError) => void,
  ) {
    this.loaded = new Promise((resolve, reject) => {
      this.settleLoaded = (e) => (e ? reject(e) : resolve());
    });
    this.loaded.catch(() => undefined);
  }

  /** Starts watching from `fromRevision` and lists once. Placement waits for it through `alive`. */
  async start(fromRevision: number): Promise<void> {
    if (this.closed) return this.loaded;
    this.watch = this.repo.watchNodeState(fromRevision, (c) => this.apply(c), this.onError);
    try {
      for (const c of await this.repo.listNodeState()) this.apply(c);
      this.ready = !this.closed;
      this.settleLoaded();
    } catch (e) {
      this.settleLoaded(e as Error);
    }
    return this.loaded;
  }

  close(): void {
    this.closed = true;
    this.ready = false;
    this.watch?.close();
    this.watch = undefined;
    this.settleLoaded(new PrismError('UNAVAILABLE', 'the cluster view closed: this scheduler term ended'));
  }

  /** Ids of nodes with a record and no member key (dead), as the view holds them now. */
  deadNodes(): string[] {
    return [...this.nodes.live.keys()].filter((id) => !this.members.live.has(id));
  }

  /** The alive nodes with their reservations, once the first listing is in. */
  async alive(): Promise<ViewNode[]> {
    await this.loaded;
    return this.aliveNow()!;
  }

  /** As `alive`, without waiting: undefined until the first listing is in (or after the view closed). */
  aliveNow(): ViewNode[] | undefined {
    if (!this.ready) return undefined;
    const out: ViewNode[] = [];
    for (const [id, { value: n }] of this.nodes.live) {
      if (!this.members.live.has(id)) continue;
      const r = this.reservations.live.get(id);
      out.push({
        id: n.id, name: n.name, runtimes: n.runtimes, labels: n.labels ?? {}, capacity: n.capacity,
        reserved: r?.value ?? { cpus: 0, memoryMb: 0, sandboxes: 0 }, reservationRevision: r?.revision ?? 0,
        ...(n.resources.diskBytes > 0 ? { diskFreeMb: Math.floor((n.resources.diskBytes - n.resources.diskUsedBytes) / (1 << 20)) } : {}),
      });
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  /** The leader's own placement landed at `revision`: the reservations it wrote hold from there. */
  committed(reservations: { node: string; value: Reservation }[], revision: number): void {
    for (const r of reservations) this.reservations.apply(r.node, r.value, revision);
  }

  /**
   * Reads the reservations again after a placement was refused. True when one of `used` (node ->
   * revision the refused batch compared with) has moved on, which explains the refusal.
   */
  async refreshReservations(used: Map<string, number>): Promise<boolean> {
    for (const c of await this.repo.listNodeState()) if (c.kind === 'reservation') this.apply(c);
    return [...used].some(([node, rev]) => (this.reservations.live.get(node)?.revision ?? 0) !== rev);
  }

  private apply(c: NodeStateChange): void {
    if (c.kind === 'node') this.nodes.apply(c.node, c.value, c.revision);
    else if (c.kind === 'reservation') this.reservations.apply(c.node, c.value, c.revision);
    else if (this.members.apply(c.node, c.value, c.revision) && c.value === undefined) this.onNodeGone(c.node);
  }
}
