import { tmpdir } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import type { EgressPolicy } from '../core/types.js';
import { startNode } from '../daemon/node-wiring.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import type { NetworkManager, SandboxNetwork, SetupOptions } from '../net/network-manager.js';
import type { TaskHandle } from '../runtime/driver.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { silentLogger } from './logger.js';

const IMAGE = 'prism.local/base:test';
const images = oneImageStore(IMAGE, { digest: 'sha256:' + 'cd'.repeat(32) });

/** Records calls; its networks outlive a "restart" like real namespaces do. */
class FakeNetwork implements NetworkManager {
  readonly nets = new Map<string, EgressPolicy>();
  readonly calls: string[] = [];
  async setup(id: string, egress: EgressPolicy, opts: SetupOptions = {}): Promise<SandboxNetwork> {
    const where = opts.netns === undefined ? '' : opts.netns === 'later' ? ' later' : ` into ${opts.netns.path}`;
    this.calls.push(`setup ${id}${where}`);
    this.nets.set(id, egress);
    return { sandboxId: id, netnsPath: `/run/netns/prism-${id}`, address: '10.203.0.2', gateway: '10.203.0.1', nameservers: [] };
  }
  async teardown(id: string): Promise<void> {
    this.calls.push(`teardown ${id}`);
    this.nets.delete(id);
  }
  async listAttached(): Promise<string[]> {
    return [...this.nets.keys()];
  }
  get(id: string) {
    return this.nets.has(id) ? { sandboxId: id, netnsPath: '', address: '10.203.0.2', gateway: '10.203.0.1', nameservers: [] } : undefined;
  }
  async traffic(id: string) {
    return this.nets.has(id) ? { rxBytes: 100, txBytes: 20 } : undefined;
  }
  async close(): Promise<void> {}
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A driver whose tasks keep their own network namespace (as Docker's), a new one per start. */
class OwnNetnsDriver extends FakeDriver {
  starts = 0;
  failNetns = false;
  constructor() {
    super({ capabilities: { network: 'own' } });
  }
  override async create(spec: Parameters<FakeDriver['create']>[0]) {
    this.starts++;
    return super.create(spec);
  }
  override async start(h: TaskHandle) {
    this.starts++;
    return super.start(h);
  }
  async taskNetns(h: TaskHandle): Promise<string> {
    if (this.failNetns) throw new Error('injected: no namespace');
    return `/proc/${this.starts}/ns/net#${h.id}`;
  }
}

async function boot(store: SqliteStore, driver: FakeDriver, net: FakeNetwork) {
  const node = await startNode({
    store, id: 'node-test', name: 'test-node', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
    images, drivers: new Map([['oci', driver]]), runtimeInfo: [], net,
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
    execLimits: { recordBytes: 1 << 16, recordsPerSandbox: 10, maxTimeoutSec: 3600 },
    watchdogMs: 60_000, log: silentLogger,
  });
  cleanups.push(() => node.stop());
  return node;
}

describe('node agent with a NetworkManager', () => {
  it('sets a network up only when needed, passes it to the driver, and removes it on delete', async () => {
    const store = SqliteStore.open(':memory:');
    cleanups.push(() => store.close());
    const driver = new FakeDriver();
    const net = new FakeNetwork();
    const node = await boot(store, driver, net);
    const plain = await node.sandboxes.create({});
    expect(net.calls.filter((c) => c.startsWith('setup'))).toEqual([]);
    const sb = await node.sandboxes.create({ network: { egress: 'all' }, ports: [8080] });
    expect(net.nets.get(sb.id)).toBe('all');
    expect(await node.sandboxes.portTarget(sb.id, 8080)).toEqual({ host: '10.203.0.2', port: 8080 });
    await expect(node.sandboxes.portTarget(sb.id, 8081)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(node.sandboxes.portTarget(plain.id, 8080)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await node.sandboxes.delete(sb.id);
    expect(net.nets.size).toBe(0);
  });

  it('tears the network down when the driver fails to create the task', async () => {
    const store = SqliteStore.open(':memory:');
    cleanups.push(() => store.close());
    const driver = new FakeDriver();
    const net = new FakeNetwork();
    const node = await boot(store, driver, net);
    driver.failNextCreate();
    await expect(node.sandboxes.create({ network: { egress: 'all' } })).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(net.nets.size).toBe(0);
    expect(net.calls.some((c) => c.startsWith('teardown'))).toBe(true);
  });

  it('at start reattaches networks of known sandboxes and removes unknown ones', async () => {
    const store = SqliteStore.open(':memory:');
    cleanups.push(() => store.close());
    const driver = new FakeDriver();
    const net = new FakeNetwork();
    const first = await boot(store, driver, net);
    const sb = await first.sandboxes.create({ network: { egress: { allow: ['example.com'] } } });
    net.nets.set('sb-0000deadbeef', 'all'); // a network whose sandbox the Store does not know
    await first.stop();
    net.calls.length = 0;
    await boot(store, driver, net);
    expect(net.calls).toContain(`setup ${sb.id}`);
    expect(net.calls).toContain('teardown sb-0000deadbeef');
    expect([...net.nets.keys()]).toEqual([sb.id]);
  });

  it('links the own namespace of a driver that keeps one after create and every start, and cleans up when that fails', async () => {
    const store = SqliteStore.open(':memory:');
    cleanups.push(() => store.close());
    const driver = new OwnNetnsDriver();
    const net = new FakeNetwork();
    const node = await boot(store, driver, net);
    const sb = await node.sandboxes.create({ network: { egress: 'all' } });
    expect(net.calls).toEqual([`setup ${sb.id} later`, `setup ${sb.id} into /proc/1/ns/net#${sb.id}`]);
    await node.sandboxes.stop(sb.id);
    await node.sandboxes.start(sb.id);
    expect(net.calls.at(-1)).toBe(`setup ${sb.id} into /proc/2/ns/net#${sb.id}`);
    driver.failNetns = true;
    await expect(node.sandboxes.create({ network: { egress: 'all' } })).rejects.toBeTruthy();
    expect([...net.nets.keys()]).toEqual([sb.id]);
    expect(await driver.listTasks()).toEqual([sb.id]);
  });
});
