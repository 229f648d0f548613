import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PrismError, type ErrorCode } from '../core/errors.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { EtcdStore } from '../store/etcd/etcd-store.js';
import type { Store } from '../store/store.js';
import { EtcdCluster, etcdSkipReason } from '../../test/fixtures/etcd-cluster.js';
import { startNode } from '../daemon/node-wiring.js';
import { LocalVolumeStore } from '../volumes/local/local-volume-store.js';
import { silentLogger } from './logger.js';

const NODE = 'node-test';
const IMAGE = 'prism.local/base:test';
const images = oneImageStore(IMAGE, { digest: 'sha256:' + 'ab'.repeat(32), layerDirs: ['/layers/0'] });

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** One node on SQLite (or `store`) with fake drivers and real volume data (sparse ext4 files in a temp dir, no mounts). */
async function setup(given?: Store) {
  const dir = await mkdtemp(join(tmpdir(), 'prism-volsvc-'));
  const store = given ?? SqliteStore.open(':memory:');
  const oci = new FakeDriver();
  const microvm = new FakeDriver({ name: 'microvm', capabilities: { isolation: 'vm' } });
  const data = new LocalVolumeStore(join(dir, 'volumes'));
  const node = await startNode({
    store, id: NODE, name: 'test-node', version: 'test', dataDir: dir, address: 'http://127.0.0.1:0',
    images, drivers: new Map([['oci', oci], ['microvm', microvm]]), runtimeInfo: [], volumes: data,
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
    execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600 },
    watchdogMs: 60_000, log: silentLogger,
  });
  cleanups.push(() => rm(dir, { recursive: true, force: true }), () => store.close(), () => node.stop());
  await node.nodes.publish();
  return { store, oci, data, dir, volumes: node.volumes, sandboxes: node.sandboxes, node };
}

async function codeOf(p: Promise<unknown>): Promise<ErrorCode | string | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => (e instanceof PrismError ? e.code : `not a PrismError: ${String(e)}`),
  );
}

describe('VolumeService', () => {
  it('creates a volume on this node with its data; refuses duplicates and bad sizes, leaving nothing', async () => {
    const { volumes, data } = await setup();
    const v = await volumes.create({ name: 'data', sizeMb: 32 });
    expect(v).toMatchObject({ name: 'data', sizeMb: 32, node: NODE, multiAttach: false, attachments: [] });
    expect(existsSync(await data.image('data'))).toBe(true);
    expect(await volumes.get('data')).toEqual(v);
    expect(await codeOf(volumes.create({ name: 'data', sizeMb: 32 }))).toBe('ALREADY_EXISTS');
    expect(await codeOf(volumes.create({ name: 'tiny', sizeMb: 1 }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(volumes.create({ name: 'Bad', sizeMb: 32 }))).toBe('INVALID_ARGUMENT');
    expect((await volumes.list()).map((x) => x.name)).toEqual(['data']);
    expect(await data.list()).toEqual(['data']);
    expect(await codeOf(volumes.get('nope'))).toBe('NOT_FOUND');
  });

  it('a sandbox gets its volumes in its task spec, is placed on their node, and holds them until deleted', async () => {
    const { volumes, sandboxes, node, data } = await setup();
    await volumes.create({ name: 'data', sizeMb: 32 });
    const sb = await sandboxes.create({ volumes: [{ name: 'data', mountPath: '/data' }] });
    expect(sb).toMatchObject({ status: 'running', node: NODE, volumeNode: NODE, volumes: [{ name: 'data', mountPath: '/data', readOnly: false }] });
    expect((await node.repo.getHandle(NODE, sb.id))?.spec.volumes).toEqual([{ name: 'data', image: await data.image('data'), mountPath: '/data', readOnly: false }]);
    expect((await volumes.get('data')).attachments).toEqual([{ sandboxId: sb.id, mountPath: '/data', readOnly: false, runtime: 'oci' }]);

    await sandboxes.stop(sb.id);
    expect(await codeOf(volumes.delete('data'))).toBe('CONFLICT'); // stopped still holds it
    await sandboxes.delete(sb.id);
    expect((await volumes.get('data')).attachments).toEqual([]);
    await volumes.delete('data');
    expect(await codeOf(volumes.get('data'))).toBe('NOT_FOUND');
    expect(await data.list()).toEqual([]);
  });

  it('a second read-write attach is CONFLICT (nothing written), read-only is fine, multiAttach allows it', async () => {
    const { volumes, sandboxes } = await setup();
    await volumes.create({ name: 'one', sizeMb: 16 });
    await volumes.create({ name: 'many', sizeMb: 16, multiAttach: true });
    const a = await sandboxes.create({ volumes: [{ name: 'one', mountPath: '/v' }, { name: 'many', mountPath: '/m' }] });
    const before = (await sandboxes.list()).length;
    expect(await codeOf(sandboxes.create({ name: 'second', volumes: [{ name: 'one', mountPath: '/v' }] }))).toBe('CONFLICT');
    expect((await sandboxes.list()).length).toBe(before);
    expect(await codeOf(sandboxes.get('second'))).toBe('NOT_FOUND');
    const reader = await sandboxes.create({ volumes: [{ name: 'one', mountPath: '/v', readOnly: true }] });
    const writer2 = await sandboxes.create({ volumes: [{ name: 'many', mountPath: '/m' }] });
    expect((await volumes.get('one')).attachments.map((x) => [x.sandboxId, x.readOnly])).toEqual([[a.id, false], [reader.id, true]]);
    expect((await volumes.get('many')).attachments.map((x) => x.sandboxId)).toEqual([a.id, writer2.id]);
  });

  it('a microVM never shares a volume that someone writes to, even with multiAttach', async () => {
    const { volumes, sandboxes } = await setup();
    await volumes.create({ name: 'shared', sizeMb: 16, multiAttach: true });
    await sandboxes.create({ volumes: [{ name: 'shared', mountPath: '/s' }] });
    expect(await codeOf(sandboxes.create({ runtime: 'microvm', volumes: [{ name: 'shared', mountPath: '/s', readOnly: true }] }))).toBe('CONFLICT');
  });

  it('a failed create releases the attachment; unknown volumes and bad paths are refused before anything is written', async () => {
    const { volumes, sandboxes, oci } = await setup();
    await volumes.create({ name: 'data', sizeMb: 16 });
    oci.failNextCreate();
    expect(await codeOf(sandboxes.create({ volumes: [{ name: 'data', mountPath: '/data' }] }))).toBe('INTERNAL');
    expect((await volumes.get('data')).attachments).toEqual([]);
    expect(await codeOf(sandboxes.create({ volumes: [{ name: 'nope', mountPath: '/data' }] }))).toBe('NOT_FOUND');
    for (const mountPath of ['relative', '/', '/proc/x', '/.prism', '/a/../b']) {
      expect(await codeOf(sandboxes.create({ volumes: [{ name: 'data', mountPath }] })), mountPath).toBe('INVALID_ARGUMENT');
    }
    expect(await sandboxes.list()).toEqual([]);
    // The volume is free again: a new sandbox takes it read-write.
    await sandboxes.create({ volumes: [{ name: 'data', mountPath: '/data' }] });
  });

  it('concurrent read-write attaches: exactly one wins', async () => {
    const { volumes, sandboxes } = await setup();
    await volumes.create({ name: 'race', sizeMb: 16 });
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => sandboxes.create({ volumes: [{ name: 'race', mountPath: '/r' }] })));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as PrismError).code).toBe('CONFLICT');
    expect((await volumes.get('race')).attachments).toHaveLength(1);
  });

  it('a volume a microVM wrote is checked before a container mounts it; one beyond repair is refused', async () => {
    const { volumes, sandboxes, data } = await setup();
    await volumes.create({ name: 'vm', sizeMb: 16 });
    const vm = await sandboxes.create({ runtime: 'microvm', volumes: [{ name: 'vm', mountPath: '/v' }] });
    expect((await volumes.get('vm')).needsCheck).toBe(true);
    await sandboxes.delete(vm.id);
    const c = await sandboxes.create({ volumes: [{ name: 'vm', mountPath: '/v' }] });
    expect((await volumes.get('vm')).needsCheck).toBeUndefined();
    await sandboxes.delete(c.id);

    await sandboxes.delete((await sandboxes.create({ runtime: 'microvm', volumes: [{ name: 'vm', mountPath: '/v' }] })).id);
    await writeFile(await data.image('vm'), Buffer.alloc(16 << 20)); // what a hostile guest could leave
    const err = await sandboxes.create({ volumes: [{ name: 'vm', mountPath: '/v' }] }).catch((e: unknown) => e as PrismError);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/damaged beyond repair/) });
    expect(await volumes.get('vm')).toMatchObject({ attachments: [], needsCheck: true });
    // A read-only microVM leaves nothing to check.
    await volumes.create({ name: 'ro', sizeMb: 16 });
    await sandboxes.create({ runtime: 'microvm', volumes: [{ name: 'ro', mountPath: '/r', readOnly: true }] });
    expect((await volumes.get('ro')).needsCheck).toBeUndefined();
  });

  it('reconcile removes data without a record and half-made volumes', async () => {
    const { volumes, data } = await setup();
    await volumes.create({ name: 'kept', sizeMb: 16 });
    await data.create('orphan', 16);
    await volumes.reconcile();
    expect(await data.list()).toEqual(['kept']);
  });
});

describe('volumes in a cluster (nodes on one store, in process)', () => {
  async function clusterNode(store: SqliteStore, id: string, dir: string) {
    const driver = new FakeDriver();
    const data = new LocalVolumeStore(join(dir, id, 'volumes'));
    await mkdir(join(dir, id));
    const svc = await startNode({
      store, id, name: `name-${id}`, version: 'test', dataDir: join(dir, id), address: `http://${id}.invalid:8008`,
      images, drivers: new Map([['oci', driver]]), runtimeInfo: [], volumes: data,
      defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 256, pidsLimit: 64, diskMb: 2048, maxOpenFiles: 4096 },
      labels: {}, capacity: { cpus: 8, memoryMb: 8192 }, placement: 'spread', nodeTtlMs: 600, scheduleTimeoutMs: 3000,
      execLimits: { recordBytes: 1 << 16, recordsPerSandbox: 10, maxTimeoutSec: 60 }, watchdogMs: 60_000, log: silentLogger,
    });
    return { id, driver, data, svc };
  }

  it('sandboxes with a volume are placed on its node; they fail clearly while that node is dead', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'prism-volcluster-'));
    const store = SqliteStore.open(':memory:', { leaseSweepMs: 50 });
    const nodes: Awaited<ReturnType<typeof clusterNode>>[] = [];
    let n2Stopped = false;
    cleanups.push(() => rm(dir, { recursive: true, force: true }), () => store.close(), async () => {
      for (const n of nodes) if (n.id !== 'n2' || !n2Stopped) await n.svc.stop();
    });
    for (const id of ['n0', 'n1', 'n2']) nodes.push(await clusterNode(store, id, dir));
    const [n0, , n2] = nodes as [(typeof nodes)[number], unknown, (typeof nodes)[number]];

    expect(await n2.svc.volumes.create({ name: 'shared', sizeMb: 16, multiAttach: true })).toMatchObject({ node: 'n2' });
    const created = await Promise.all(Array.from({ length: 4 }, () => n0.svc.sandboxes.create({ volumes: [{ name: 'shared', mountPath: '/s' }] })));
    expect(created.map((sb) => sb.node)).toEqual(['n2', 'n2', 'n2', 'n2']);
    expect((await n2.driver.listTasks()).sort()).toEqual(created.map((sb) => sb.id).sort());
    expect(await n0.data.list()).toEqual([]);

    await n2.svc.stop(); // no leave: its lease runs out as after a crash
    n2Stopped = true;
    const deadline = Date.now() + 5000;
    while ((await n0.svc.nodes.list()).find((n) => n.id === 'n2')?.status !== 'dead') {
      if (Date.now() > deadline) throw new Error('n2 never went dead');
      await new Promise((r) => setTimeout(r, 25));
    }
    const err = await n0.svc.sandboxes.create({ volumes: [{ name: 'shared', mountPath: '/s', readOnly: true }] }).catch((e: unknown) => e as PrismError);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringMatching(/volumes or snapshot live on node n2, which is not alive/) });
  });
});

describe.skipIf(etcdSkipReason !== '')('volume attachments on etcd (the cluster store)', () => {
  const cluster = new EtcdCluster();
  beforeAll(() => cluster.start(1));
  afterAll(() => cluster.stop());

  it('attach, conflict, racing attaches, release and delete behave as on SQLite', async () => {
    const store = await EtcdStore.connect({ endpoints: cluster.endpoints(), prefix: `prism-volumes-test/${process.pid}-${Date.now()}/` });
    const { volumes, sandboxes } = await setup(store);
    await volumes.create({ name: 'etcd-vol', sizeMb: 16 });
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => sandboxes.create({ volumes: [{ name: 'etcd-vol', mountPath: '/v' }] })));
    const won = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof sandboxes.create>>> => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as PrismError).code).toBe('CONFLICT');
    expect((await volumes.get('etcd-vol')).attachments.map((a) => a.sandboxId)).toEqual([won[0]!.value.id]);
    expect(await codeOf(volumes.delete('etcd-vol'))).toBe('CONFLICT');
    await sandboxes.delete(won[0]!.value.id);
    await volumes.delete('etcd-vol');
    expect(await volumes.list()).toEqual([]);
  });
});

