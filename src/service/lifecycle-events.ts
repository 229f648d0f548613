import { PrismError } from '../core/errors.js';
import type { Sandbox } from '../core/types.js';
import { LIFECYCLE_EVENT_TYPES, type LifecycleEventWire } from '../core/wire.js';
import type { SandboxFeed } from './sandbox-events.js';

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
 */
export class LifecycleEvents {
  private readonly last = new Map<string, { status: Sandbox['status']; name: string; node: string; runtime: Sandbox['runtime'] }>();
  private readonly subscribers = new Set<{ filter: EventFilter; send: (e: LifecycleEventWire) => void }>();
  private unsubscribe?: () => void;

  constructor(private readonly feed: SandboxFeed & { listSandboxes(): Promise<Sandbox[]> }) {}

  /** Follows the feed; the records there now are known, so their next change is told as what it is. */
  async start(): Promise<void> {
    this.unsubscribe = this.feed.onChange((id, sb, revision) => this.changed(id, sb, revision), () => void this.seed());
    await this.seed();
  }

  stop(): void {
    this.unsubscribe?.();
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

  private async seed(): Promise<void> {
    for (const sb of await this.feed.listSandboxes()) {
      if (!this.last.has(sb.id)) this.last.set(sb.id, { status: sb.status, name: sb.name, node: sb.node, runtime: sb.runtime });
    }
  }

  private changed(id: string, sb: Sandbox | undefined, revision: number): void {
    const before = this.last.get(id);
    let event: LifecycleEventWire;
    const time = new Date().toISOString();
    if (!sb) {
      this.last.delete(id);
      event = { type: 'deleted', sandboxId: id, revision, time, ...(before ? { name: before.name, node: before.node, runtime: before.runtime } : {}) };
    } else {
      this.last.set(id, { status: sb.status, name: sb.name, node: sb.node, runtime: sb.runtime });
      if (before?.status === sb.status) return;
      const type: LifecycleEventType = sb.status === 'pending' ? 'created' : sb.status;
      event = { type, sandboxId: id, name: sb.name, node: sb.node, runtime: sb.runtime, revision, time };
      if (sb.error && (sb.status === 'failed' || sb.status === 'stopped' || sb.status === 'lost')) event.error = { code: sb.error.code, message: sb.error.message };
    }
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
