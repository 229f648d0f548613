import { PrismError } from '../core/errors.js';
import type { Watch } from '../store/store.js';
import type { Sandbox } from '../core/types.js';
import { LIFECYCLE_EVENT_TYPES, type LifecycleEventWire } from '../core/wire.js';
import type { Logger } from './logger.js';
import type { SandboxFeed } from './sandbox-events.js';
import type { SandboxRepo } from './sandbox-repo.js';

/** Where nodes going dead are seen: the members' watch and the node records (SandboxRepo). */
export type NodeFeed = Pick<SandboxRepo, 'listNodes' | 'watchMembers' | 'revision'>;

export type LifecycleEventType = LifecycleEventWire['type'];

/** Which events a subscriber gets: one sandbox (by id or name) and/or some types; absent = all. */
export interface EventFilter {
  sandbox?: string;
  types?: LifecycleEventType[];
}

/** Most subscribers at once per node (each is an open HTTP stream). */
const MAX_SUBSCRIBERS = 256;

/**
 * Sandbox lifecycle events, live, for `GET /events` and `prismctl events`: made from the node's one
 * watch on sandbox records (SandboxFeed), so every node sees every sandbox of the cluster. An event is
 * a record appearing (`created`), a change of its status (the new status), or its removal (`deleted`);
 * other changes to a record (a metadata update, a timeout armed) are not events. Only the last status
 * of each existing sandbox is kept, to tell a status change from another change.
 *
 * With a NodeFeed, also `node-dead` when a node's member key goes (its lease ran out or it left): a
 * watch on member keys, which change only when nodes come and go. The sandboxes such a node ran then
 * go `lost` by the leader's hand, and those are status changes like any other.
 */
export class LifecycleEvents {
  private readonly last = new Map<string, { status: Sandbox['status']; name: string; node: string; runtime: Sandbox['runtime'] }>();
  private readonly subscribers = new Set<{ filter: EventFilter; send: (e: LifecycleEventWire) => void }>();
  private unsubscribe?: () => void;
  /** Nodes known alive, with their names when known: a death missed while the watch started over is found by a listing. */
  private readonly alive = new Map<string, string | undefined>();
  private memberWatch?: Watch;
  private stopped = false;

  constructor(
    private readonly feed: SandboxFeed & { listSandboxes(): Promise<Sandbox[]> },
    private readonly nodes?: NodeFeed,
    private readonly log?: Logger,
  ) {}

  /** Follows the feed; the records there now are known, so their next change is told as what it is. */
  async start(): Promise<void> {
    this.unsubscribe = this.feed.onChange((id, sb, revision) => this.changed(id, sb, revision), () => void this.seed());
    await this.seed();
    if (this.nodes) await this.watchNodes(this.nodes);
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    this.memberWatch?.close();
    this.subscribers.clear();
  }

  /** Calls `send` with every event that passes `filter` from now on; returns the unsubscribe. */
  subscribe(filter: EventFilter, send: (e: LifecycleEventWire) => void): () => void {
    for (const t of filter.types ?? []) {
      if (!(LIFECYCLE_EVENT_TYPES as readonly string[]).includes(t)) {
        throw new PrismError('INVALID_ARGUMENT', `unknown event type '${t}'; one of ${LIFECYCLE_EVENT_TYPES.join(', ')}`);
      }
    }
    if (this.subscribers.size >= MAX_SUBSCRIBERS) throw new PrismError('RESOURCE_EXHAUSTED', `this node already streams events to ${MAX_SUBSCRIBERS} clients`);
    const sub = { filter, send };
    this.subscribers.add(sub);
    return () => this.subscribers.delete(sub);
  }

  /** Subscribers now (tests and leak checks). */
  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /**
   * Lists the nodes, then watches member keys from a revision read before the listing: a node that
   * dies in between is dead in the listing and its delete still comes through the watch. Run again
   * when the watch fails (history compacted): a node alive before and dead in the new listing died
   * unseen, and is told then.
   */
  private async watchNodes(nodes: NodeFeed): Promise<void> {
    this.memberWatch?.close();
    const from = await nodes.revision();
    const listed = await nodes.listNodes();
    const missed = [...this.alive.entries()].filter(([id]) => !listed.some((n) => n.id === id && n.status === 'alive'));
    this.alive.clear();
    for (const n of listed) if (n.status === 'alive') this.alive.set(n.id, n.name);
    for (const [id, name] of missed) this.nodeDead(id, name, from);
    // Told above: the watch may still deliver their deletes (when they died after `from`).
    const told = new Set(missed.map(([id]) => id));
    if (this.stopped) return;
    this.memberWatch = nodes.watchMembers(from, (id, up, revision) => {
      if (up) {
        if (!this.alive.has(id)) this.alive.set(id, undefined);
      } else if (!told.delete(id)) {
        const name = this.alive.get(id);
        this.alive.delete(id);
        if (name !== undefined) this.nodeDead(id, name, revision);
        // A node that joined after the listing: its name is in its record.
        else void nodes.listNodes().then((all) => this.nodeDead(id, all.find((n) => n.id === id)?.name, revision), () => this.nodeDead(id, undefined, revision));
      }
    }, (e) => {
      this.log?.warn({ err: e }, 'events: the member watch failed; listing nodes again');
      if (!this.stopped) void this.watchNodes(nodes).catch((err) => this.log?.error({ err }, 'events: restarting the member watch failed'));
    });
  }

  private nodeDead(id: string, name: string | undefined, revision: number): void {
    this.publish({ type: 'node-dead', node: id, ...(name ? { nodeName: name } : {}), revision, time: new Date().toISOString() });
  }

  private async seed(): Promise<void> {
    for (const sb of await this.feed.listSandboxes()) {
      if (!this.last.has(sb.id)) this.last.set(sb.id, { status: sb.status, name: sb.name, node: sb.node, runtime: sb.runtime });
    }
  }

  private changed(id: string, sb: Sandbox | undefined, revision: number): void {
    const before = this.last.get(id);
    if (!sb) this.last.delete(id);
    else if (before) {
      const same = before.status === sb.status;
      Object.assign(before, { status: sb.status, name: sb.name, node: sb.node, runtime: sb.runtime });
      if (same) return;
    } else this.last.set(id, { status: sb.status, name: sb.name, node: sb.node, runtime: sb.runtime });
    // Every node sees every change of the cluster; the event itself is made only for someone to send it to.
    if (this.subscribers.size === 0) return;
    const time = new Date().toISOString();
    let event: LifecycleEventWire;
    if (!sb) {
      event = { type: 'deleted', sandboxId: id, revision, time, ...(before ? { name: before.name, node: before.node, runtime: before.runtime } : {}) };
    } else {
      // A record that appears already placed (the leader placed it at once, Scheduler.place) was
      // created all the same: `created` comes first, then its status.
      if (!before && sb.status !== 'pending') this.publish({ type: 'created', sandboxId: id, name: sb.name, node: sb.node, runtime: sb.runtime, revision, time });
      const type: LifecycleEventType = sb.status === 'pending' ? 'created' : sb.status;
      event = { type, sandboxId: id, name: sb.name, node: sb.node, runtime: sb.runtime, revision, time };
      if (sb.error && (sb.status === 'failed' || sb.status === 'stopped' || sb.status === 'lost')) event.error = { code: sb.error.code, message: sb.error.message };
    }
    this.publish(event);
  }

  private publish(event: LifecycleEventWire): void {
    for (const s of [...this.subscribers]) {
      const f = s.filter;
      if (f.sandbox !== undefined && f.sandbox !== event.sandboxId && f.sandbox !== event.name) continue;
      if (f.types?.length && !f.types.includes(event.type)) continue;
      try {
        s.send(event);
      } catch {
        this.subscribers.delete(s); // a stream that cannot take it is gone
      }
    }
  }
}
