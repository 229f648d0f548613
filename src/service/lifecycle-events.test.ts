import { describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import type { NodeInfo, Sandbox } from '../core/types.js';
import type { LifecycleEventWire } from '../core/wire.js';
import { LifecycleEvents, type NodeFeed } from './lifecycle-events.js';
import type { SandboxChangeListener } from './sandbox-events.js';

/** Sandbox records and their changes, as the node's SandboxEvents delivers them. */
class Sandboxes {
  records = new Map<string, Sandbox>();
  fn?: SandboxChangeListener;
  rev = 100;
  async listSandboxes() {
    return [...this.records.values()];
  }
  onChange(fn: SandboxChangeListener) {
    this.fn = fn;
    return () => (this.fn = undefined);
  }
  put(sb: Sandbox) {
    this.records.set(sb.id, sb);
    this.fn?.(sb.id, sb, ++this.rev);
  }
}

/** Node records and member keys: `die` deletes a member key as a lease running out does. */
class Members implements NodeFeed {
  nodes = new Map<string, { name: string; alive: boolean }>();
  watches: { from: number; fn: (node: string, alive: boolean, revision: number) => void; onError?: (e: PrismError) => void; closed: boolean }[] = [];
  rev = 10;
  async revision() {
    return this.rev;
  }
  async listNodes() {
    return [...this.nodes].map(([id, n]) => ({ id, name: n.name, status: n.alive ? 'alive' : 'dead' }) as NodeInfo);
  }
  watchMembers(from: number, fn: (node: string, alive: boolean, revision: number) => void, onError?: (e: PrismError) => void) {
    const w = { from, fn, ...(onError ? { onError } : {}), closed: false };
    this.watches.push(w);
    return { close: () => void (w.closed = true) };
  }
  get watch() {
    return this.watches.at(-1)!;
  }
  join(id: string, name: string, tell = true) {
    this.nodes.set(id, { name, alive: true });
    this.rev++;
    if (tell) this.watch.fn(id, true, this.rev);
  }
  die(id: string, tell = true) {
    this.nodes.get(id)!.alive = false;
    this.rev++;
    if (tell) this.watch.fn(id, false, this.rev);
  }
}

const sandbox = (id: string, node: string, status: Sandbox['status']): Sandbox => ({ id, name: `name-${id}`, node, status, runtime: 'oci' }) as Sandbox;
const flush = () => new Promise((r) => setImmediate(r));

async function setup() {
  const sandboxes = new Sandboxes();
  const members = new Members();
  members.join('n1', 'alpha', false);
  members.join('n2', 'beta', false);
  sandboxes.records.set('sb-1', sandbox('sb-1', 'n2', 'running'));
  const events = new LifecycleEvents(sandboxes, members);
  await events.start();
  const got: LifecycleEventWire[] = [];
  events.subscribe({}, (e) => got.push(e));
  return { sandboxes, members, events, got };
}

describe('LifecycleEvents: node-dead', () => {
  it('tells a node whose member key went, by id and name, from a watch that starts before its listing', async () => {
    const { sandboxes, members, events, got } = await setup();
    expect(members.watch.from).toBe(12);
    members.die('n2');
    // The leader then marks its sandboxes lost: a status change like any other.
    sandboxes.put({ ...sandbox('sb-1', 'n2', 'lost'), error: { code: 'NODE_LOST', message: 'node beta is gone' } } as Sandbox);
    expect(got).toEqual([
      { type: 'node-dead', node: 'n2', nodeName: 'beta', revision: 13, time: expect.any(String) },
      expect.objectContaining({ type: 'lost', sandboxId: 'sb-1', node: 'n2', error: { code: 'NODE_LOST', message: 'node beta is gone' } }),
    ]);
    expect(got[0]).not.toHaveProperty('sandboxId');
    events.stop();
    expect(members.watch.closed).toBe(true);
  });

  it('names a node that joined after the listing from its record', async () => {
    const { members, got } = await setup();
    members.join('n3', 'gamma');
    members.die('n3');
    await flush();
    expect(got).toEqual([{ type: 'node-dead', node: 'n3', nodeName: 'gamma', revision: 14, time: expect.any(String) }]);
  });

  it('after the member watch failed, tells a death it missed once, from a new listing', async () => {
    const { members, got } = await setup();
    members.die('n1', false); // unseen: the watch is failing
    members.watch.onError!(new PrismError('UNAVAILABLE', 'compacted'));
    await flush();
    expect(members.watches).toHaveLength(2);
    expect(got).toEqual([{ type: 'node-dead', node: 'n1', nodeName: 'alpha', revision: 13, time: expect.any(String) }]);
    // The new watch, from before its listing, may deliver that delete again: not told twice.
    members.watch.fn('n1', false, 13);
    members.die('n2');
    expect(got.map((e) => `${e.type} ${e.node}`)).toEqual(['node-dead n1', 'node-dead n2']);
  });

  it('filters: a sandbox filter leaves node events out; the node-dead type keeps only them', async () => {
    const { sandboxes, members, events } = await setup();
    const ofSandbox: string[] = [];
    const deaths: string[] = [];
    events.subscribe({ sandbox: 'sb-1' }, (e) => ofSandbox.push(e.type));
    events.subscribe({ types: ['node-dead'] }, (e) => deaths.push(e.node!));
    members.die('n2');
    sandboxes.put(sandbox('sb-1', 'n2', 'lost'));
    expect(ofSandbox).toEqual(['lost']);
    expect(deaths).toEqual(['n2']);
  });

  it('without a node feed, only sandbox events (as before)', async () => {
    const sandboxes = new Sandboxes();
    const events = new LifecycleEvents(sandboxes);
    await events.start();
    const got: string[] = [];
    events.subscribe({}, (e) => got.push(`${e.type} ${e.sandboxId}`));
    sandboxes.put(sandbox('sb-2', 'n1', 'pending'));
    sandboxes.put(sandbox('sb-2', 'n1', 'paused'));
    expect(got).toEqual(['created sb-2', 'paused sb-2']);
    events.stop();
  });
});

describe('LifecycleEvents: sandboxes', () => {
  it('tells `created` first for a record that appears already placed (the leader places its own creates at once), then its status', async () => {
    const { sandboxes, got } = await setup();
    sandboxes.put(sandbox('sb-3', 'n1', 'scheduled'));
    sandboxes.put(sandbox('sb-3', 'n1', 'running'));
    // sb-1 was listed at start: a change of a known record is no creation.
    sandboxes.put(sandbox('sb-1', 'n2', 'stopped'));
    expect(got.map((e) => `${e.type} ${e.sandboxId}`)).toEqual(['created sb-3', 'scheduled sb-3', 'running sb-3', 'stopped sb-1']);
  });
});
