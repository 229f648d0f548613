import { tmpdir } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import type { Sandbox } from '../core/types.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { silentLogger } from '../service/logger.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { Store } from '../store/store.js';
import { startNode, type NodeServices } from './node-wiring.js';

/**
 * Several nodes in one process on one shared Store, with fake drivers: the cluster's control logic
 * (membership, election, batched placement, assignments, lost and rejoin) without real processes.
 * test/integration/cluster.test.ts runs the same flows with prismd processes on a real etcd.
 */

const IMAGE = 'prism.local/base:test';
const images = oneImageStore(IMAGE, { digest: 'sha256:' + 'ef'.repeat(32) });
const TTL = 600;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

interface TestNode {
  id: string;
  driver: FakeDriver;
  svc: NodeServices;
}

/**
 * A node on the shared store. Direct creates are off unless asked for: most of these tests are about the
 * scheduler, which then places every create (with them on, a node makes most creates itself).
 */
async function node(store: Store, id: string, opts: { memoryMb?: number; driver?: FakeDriver; scheduleTimeoutMs?: number; labels?: Record<string, string>; directCreate?: boolean } = {}): Promise<TestNode> {
  const driver = opts.driver ?? new FakeDriver();
  const svc = await startNode({
    store, id, name: `name-${id}`, version: 'test', dataDir: tmpdir(), address: `http://${id}.invalid:8008`,
    images, drivers: new Map([['oci', driver]]), runtimeInfo: [],
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 256, pidsLimit: 64, diskMb: 2048, maxOpenFiles: 4096 },
    labels: opts.labels ?? {}, capacity: { cpus: 8, memoryMb: opts.memoryMb ?? 8192 }, placement: 'spread',
    nodeTtlMs: TTL, scheduleTimeoutMs: opts.scheduleTimeoutMs ?? 5000,
    execLimits: { recordBytes: 1 << 16, recordsPerSandbox: 10, maxTimeoutSec: 60 },
    watchdogMs: 60_000, log: silentLogger, directCreate: opts.directCreate ?? false,
  });
  cleanups.push(() => svc.stop());
  return { id, driver, svc };
}

async function cluster(n: number, opts: { memoryMb?: number; directCreate?: boolean } = {}) {
  const store = SqliteStore.open(':memory:', { leaseSweepMs: 50 });
  cleanups.push(() => store.close());
  const nodes: TestNode[] = [];
  for (let i = 0; i < n; i++) nodes.push(await node(store, `n${i}`, opts));
  return { store, nodes };
}

const leaderOf = (nodes: TestNode[]) => nodes.find((n) => n.svc.membership.leaderTerm() !== undefined);

describe('a cluster of nodes on one store', () => {
  it('elects exactly one leader and spreads a burst of creates evenly, each running on its node', async () => {
    const { nodes } = await cluster(3);
    expect(nodes.filter((n) => n.svc.membership.leaderTerm() !== undefined)).toHaveLength(1);
    const [a] = nodes;
    const created = await Promise.all(Array.from({ length: 30 }, () => a!.svc.sandboxes.create({})));
    const per = new Map<string, number>();
    for (const sb of created) per.set(sb.node, (per.get(sb.node) ?? 0) + 1);
    expect([...per.values()]).toEqual([10, 10, 10]);
    for (const n of nodes) expect((await n.driver.listTasks()).sort()).toEqual(created.filter((s) => s.node === n.id).map((s) => s.id).sort());
    // Far fewer transactions than sandboxes: creates queued behind a commit go out together.
    const leader = leaderOf(nodes)!;
    expect(leader.svc.scheduler.stats.placed).toBe(30);
    expect(leader.svc.scheduler.stats.batches).toBeLessThan(30);
    const info = await a!.svc.nodes.list();
    for (const n of info) expect(n.reserved).toEqual({ cpus: 10, memoryMb: 2560, sandboxes: 10 });
    // Each node's count of sandboxes is up to date at once (not at its next status refresh).
    for (const n of info) expect(n.sandboxes).toBe(10);
    expect((await a!.svc.nodes.get(nodes[1]!.id)).sandboxes).toBe(10);
    // Deleting returns the reservation.
    for (const sb of created) await nodes.find((n) => n.id === sb.node)!.svc.sandboxes.delete(sb.id);
    for (const n of await a!.svc.nodes.list()) expect([n.reserved, n.sandboxes]).toEqual([{ cpus: 0, memoryMb: 0, sandboxes: 0 }, 0]);
  });

  it('direct creates: a burst through one node is made there until it is the slack ahead, the scheduler places the rest', async () => {
    const { nodes } = await cluster(3, { directCreate: true });
    const [a] = nodes;
    // 8192 MiB nodes, 256 MiB sandboxes: a node takes a create itself while it is at most 16 sandboxes
    // ahead of the emptiest node (counting its own in flight), so 17 of a burst.
    const created = await Promise.all(Array.from({ length: 30 }, () => a!.svc.sandboxes.create({})));
    const per = new Map<string, number>();
    for (const sb of created) per.set(sb.node, (per.get(sb.node) ?? 0) + 1);
    expect(a!.svc.direct!.stats.made).toBe(17);
    expect(leaderOf(nodes)!.svc.scheduler.stats.placed).toBe(13);
    expect(per.get(nodes[1]!.id)).toBeGreaterThan(0);
    expect(per.get(nodes[2]!.id)).toBeGreaterThan(0);
    for (const n of nodes) expect((await n.driver.listTasks()).sort()).toEqual(created.filter((s) => s.node === n.id).map((s) => s.id).sort());
    for (const n of await a!.svc.nodes.list()) expect(n.reserved.sandboxes).toBe(per.get(n.id) ?? 0);
    // Deletes give it all back.
    for (const sb of created) await nodes.find((n) => n.id === sb.node)!.svc.sandboxes.delete(sb.id);
    for (const n of await a!.svc.nodes.list()) expect(n.reserved).toEqual({ cpus: 0, memoryMb: 0, sandboxes: 0 });
  });

  it('direct creates: made while no scheduler places anything', async () => {
    const store = SqliteStore.open(':memory:', { leaseSweepMs: 50 });
    cleanups.push(() => store.close());
    // Someone else holds leadership but never schedules.
    const lease = await store.grantLease(60_000);
    await store.put('/prism/leader', 'ghost', { lease: lease.id });
    const a = await node(store, 'a', { scheduleTimeoutMs: 300, directCreate: true });
    expect((await a.svc.sandboxes.create({ name: 'no-scheduler' })).status).toBe('running');
    // One bound to a node that is not there still waits for a scheduler, and fails, leaving nothing.
    expect(await a.svc.sandboxes.create({ name: 'elsewhere', nodeSelector: { zone: 'b' } }).catch((e: unknown) => (e as PrismError).code)).toBe('UNAVAILABLE');
    expect((await a.svc.sandboxes.list()).map((sb) => sb.name)).toEqual(['no-scheduler']);
    await lease.revoke();
  });

  it.each([false, true])('never overcommits a node under concurrent creates from every node (direct creates %s)', async (directCreate) => {
    const { nodes } = await cluster(3, { memoryMb: 1024, directCreate });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => nodes[i % 3]!.svc.sandboxes.create({ memoryMb: 256 })),
    );
    const ok = results.filter((r): r is PromiseFulfilledResult<Sandbox> => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(ok).toHaveLength(12);
    for (const r of refused) expect((r.reason as PrismError).code).toBe('RESOURCE_EXHAUSTED');
    for (const n of await nodes[0]!.svc.nodes.list()) {
      expect(n.reserved.memoryMb).toBeLessThanOrEqual(n.capacity.memoryMb);
      expect(n.reserved.sandboxes).toBe(4);
    }
    // Nothing of the refused creates is left (a direct create refused at its commit made a task first).
    expect(await nodes[0]!.svc.sandboxes.list()).toHaveLength(12);
    expect((await Promise.all(nodes.map((n) => n.driver.listTasks()))).flat()).toHaveLength(12);
  });

  it('honours node labels and says when no node could ever take a sandbox', async () => {
    const store = SqliteStore.open(':memory:', { leaseSweepMs: 50 });
    cleanups.push(() => store.close());
    const a = await node(store, 'a', { labels: { gpu: 'no' } });
    await node(store, 'b', { labels: { gpu: 'yes' } });
    for (let i = 0; i < 3; i++) expect((await a.svc.sandboxes.create({ nodeSelector: { gpu: 'yes' } })).node).toBe('b');
    await expect(a.svc.sandboxes.create({ nodeSelector: { gpu: 'maybe' } })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('marks a crashed node dead and its sandboxes lost; when it returns they run again and deleted ones are destroyed', async () => {
    const { store, nodes } = await cluster(3);
    const [a, b] = nodes as [TestNode, TestNode, TestNode];
    const mine = await Promise.all(Array.from({ length: 6 }, () => a.svc.sandboxes.create({})));
    const onB = mine.filter((s) => s.node === b.id);
    expect(onB.length).toBe(2);
    // b crashes: its services stop without leaving; its tasks (the fake driver) keep running.
    await b.svc.stop();
    const t0 = Date.now();
    await until('b dead', async () => (await a.svc.nodes.get(b.id)).status === 'dead');
    await until('sandboxes lost', async () => {
      const all = await a.svc.sandboxes.list();
      return onB.every((s) => all.find((x) => x.id === s.id)?.status === 'lost');
    });
    expect(Date.now() - t0).toBeLessThan(TTL + 2000);
    const lost = await a.svc.sandboxes.get(onB[0]!.id);
    expect(lost.error?.code).toBe('NODE_LOST');
    // Lifecycle calls explain; delete works and leaves the task for b to destroy on return.
    await expect(a.svc.sandboxes.stop(onB[0]!.id)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await a.svc.sandboxes.delete(onB[0]!.id);
    // New creates avoid the dead node.
    for (let i = 0; i < 3; i++) expect((await a.svc.sandboxes.create({})).node).not.toBe(b.id);
    // b comes back (same id, same driver state).
    const b2 = await node(store, b.id, { driver: b.driver });
    expect((await a.svc.nodes.get(b.id)).status).toBe('alive');
    expect((await a.svc.sandboxes.get(onB[1]!.id)).status).toBe('running');
    expect(await b2.driver.listTasks()).toEqual([onB[1]!.id]);
  });

  it('elects a new leader when the leader crashes, and creates go on', async () => {
    const { nodes } = await cluster(3);
    const leader = leaderOf(nodes)!;
    const others = nodes.filter((n) => n !== leader);
    await leader.svc.stop(); // a crash: the lease runs out
    const t0 = Date.now();
    const sb = await others[0]!.svc.sandboxes.create({});
    expect(sb.status).toBe('running');
    expect(sb.node).not.toBe(leader.id);
    expect(Date.now() - t0).toBeLessThan(TTL + 3000);
    expect(others.filter((n) => n.svc.membership.leaderTerm() !== undefined)).toHaveLength(1);
  });

  it('hands leadership over at once when the leader leaves cleanly', async () => {
    const { nodes } = await cluster(2);
    const leader = leaderOf(nodes)!;
    const other = nodes.find((n) => n !== leader)!;
    await leader.svc.stop({ leave: true });
    await until('new leader', async () => other.svc.membership.leaderTerm() !== undefined, 1000);
  });

  it('fails a create with UNAVAILABLE and Retry-After when no scheduler places it in time, leaving nothing', async () => {
    const store = SqliteStore.open(':memory:', { leaseSweepMs: 50 });
    cleanups.push(() => store.close());
    // Someone else holds leadership but never schedules.
    const lease = await store.grantLease(60_000);
    await store.put('/prism/leader', 'ghost', { lease: lease.id });
    const a = await node(store, 'a', { scheduleTimeoutMs: 300 });
    const err = await a.svc.sandboxes.create({ name: 'waits' }).catch((e: unknown) => e as PrismError);
    expect(err).toBeInstanceOf(PrismError);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', retryAfterSec: 5 });
    expect(await a.svc.sandboxes.list()).toEqual([]);
    expect(await a.svc.repo.idForName('waits')).toBeUndefined();
    // Once the ghost's lease is gone, this node takes over and creates work.
    await lease.revoke();
    await until('leader', async () => a.svc.membership.leaderTerm() !== undefined);
    expect((await a.svc.sandboxes.create({ name: 'waits' })).status).toBe('running');
  });
});
