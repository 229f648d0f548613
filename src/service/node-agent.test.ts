import { tmpdir } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import type { Sandbox } from '../core/types.js';
import type { TaskSpec } from '../runtime/driver.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { startNode } from '../daemon/node-wiring.js';
import { silentLogger } from './logger.js';
import { readSandboxValue } from './sandbox-repo.js';
import { TaskWatchdog } from './task-watchdog.js';

/**
 * Start-up recovery. A "restart" builds a new NodeAgent and services on the same Store and the same
 * FakeDriver (whose tasks, like runc containers, outlive the daemon), then runs `recover()`.
 */

const NODE = 'node-test';
const IMAGE = 'prism.local/base:test';

const images = oneImageStore(IMAGE, { digest: 'sha256:' + 'cd'.repeat(32) });

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** One daemon's worth of services on `store` and `driver`. */
async function boot(store: SqliteStore, driver: FakeDriver) {
  const node = await startNode({
    store, id: NODE, name: 'test-node', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
    images, drivers: new Map([['oci', driver]]), runtimeInfo: [],
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
    execLimits: { recordBytes: 1 << 16, recordsPerSandbox: 10, maxTimeoutSec: 3600 },
    watchdogMs: 60_000, log: silentLogger,
  });
  cleanups.push(() => node.stop());
  const { repo, agent, sandboxes, exec } = node;
  const run = async (sb: string, argv: string[]) => {
    const out: Buffer[] = [];
    const s = await exec.exec(sb, { argv }, { stdout: (b) => out.push(b), stderr: () => undefined });
    return { ...(await s.done), stdout: Buffer.concat(out).toString() };
  };
  return { repo, agent, sandboxes, exec, run, node };
}

async function fresh() {
  const store = SqliteStore.open(':memory:');
  cleanups.push(() => store.close());
  const driver = new FakeDriver();
  const first = await boot(store, driver);
  /** Simulates a prismd restart: the old agent stops its timers, a new one recovers. */
  const restart = async () => {
    await first.node.stop();
    return boot(store, driver); // startNode recovers
  };
  return { store, driver, first, restart };
}

const handleOf = (id: string) => ({ id, runtime: 'oci' as const, spec: { id } as TaskSpec, data: {} });

describe('NodeAgent.recover', () => {
  it('reattaches to a running sandbox: it stays running and exec works', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({ name: 'keeper' });
    await first.run(sb.id, ['write', 'f', 'before']);
    const after = await restart();
    expect(await after.sandboxes.get(sb.id)).toMatchObject({ status: 'running' });
    expect(await after.run('keeper', ['read', 'f'])).toMatchObject({ exitCode: 0, stdout: 'before' });
    expect(await after.repo.getHandle(NODE, sb.id)).toBeDefined();
    expect(await driver.listTasks()).toEqual([sb.id]);
    // Lifecycle still works through the new agent.
    expect((await after.sandboxes.stop(sb.id)).status).toBe('stopped');
    expect((await after.sandboxes.start(sb.id)).status).toBe('running');
  });

  it('marks a sandbox whose task vanished failed with LOST and removes its handle', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({});
    driver.vanish(sb.id);
    const after = await restart();
    const cur = await after.sandboxes.get(sb.id);
    expect(cur.status).toBe('failed');
    expect(cur.error?.code).toBe('LOST');
    expect(await after.repo.getHandle(NODE, sb.id)).toBeUndefined();
    // It can still be deleted.
    await after.sandboxes.delete(sb.id);
    expect(await after.sandboxes.list()).toEqual([]);
  });

  it('marks a running sandbox whose task stopped as stopped (INTERRUPTED), keeping its files', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({});
    await first.run(sb.id, ['write', '/data', 'kept']);
    driver.setRecoverState(sb.id, 'stopped');
    const after = await restart();
    const cur = await after.sandboxes.get(sb.id);
    expect(cur.status).toBe('stopped');
    expect(cur.error?.code).toBe('INTERRUPTED');
    expect(cur.stoppedAt).toBeDefined();
    expect((await after.sandboxes.start(sb.id)).status).toBe('running');
    expect(await after.run(sb.id, ['read', '/data'])).toMatchObject({ exitCode: 0, stdout: 'kept' });
  });

  it('stops a task that runs although its sandbox was stopped', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({});
    await first.sandboxes.stop(sb.id);
    driver.setRecoverState(sb.id, 'running');
    const after = await restart();
    expect((await after.sandboxes.get(sb.id)).status).toBe('stopped');
    expect(await driver.inspect(handleOf(sb.id))).toBe('stopped');
  });

  it('destroys orphaned tasks the store does not know, and nothing else', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({});
    await driver.create({ ...(await first.repo.getHandle(NODE, sb.id))!.spec, id: 'sb-0rphan0rphan' });
    expect(await driver.listTasks()).toHaveLength(2);
    await restart();
    expect(await driver.listTasks()).toEqual([sb.id]);
  });

  it('removes a sandbox whose create was cut short (starting), as a failed create would, with its task', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({});
    // As if prismd died after saving the handle but before recording `running`.
    await first.repo.update(sb.id, (s) => {
      const next: Sandbox = { ...s, status: 'starting' };
      delete next.imageDigest;
      delete next.startedAt;
      return next;
    });
    const after = await restart();
    await expect(after.sandboxes.get(sb.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await driver.listTasks()).toEqual([]);
    expect(await after.repo.getHandle(NODE, sb.id)).toBeUndefined();
  });

  it('finishes a delete that was cut short', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({ name: 'half-deleted' });
    await first.repo.update(sb.id, (s) => ({ ...s, status: 'deleting' }));
    const after = await restart();
    expect(await after.sandboxes.list()).toEqual([]);
    expect(await after.repo.idForName('half-deleted')).toBeUndefined();
    expect(await driver.listTasks()).toEqual([]);
    expect(await after.repo.getHandle(NODE, sb.id)).toBeUndefined();
  });

  it('finishes a delete cut short after its task was removed (record deleting, handle kept)', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({ name: 'task-gone' });
    await first.repo.update(sb.id, (s) => ({ ...s, status: 'deleting' }));
    await driver.destroy((await first.repo.getHandle(NODE, sb.id))!);
    const after = await restart();
    expect(await after.sandboxes.list()).toEqual([]);
    expect(await after.repo.idForName('task-gone')).toBeUndefined();
    expect(await after.repo.getHandle(NODE, sb.id)).toBeUndefined();
  });

  it('stops a reattached sandbox whose timeoutSec ran out while prismd was down', async () => {
    const { first, restart } = await fresh();
    const sb = await first.sandboxes.create({ timeoutSec: 60 });
    await first.repo.update(sb.id, (s) => ({ ...s, startedAt: new Date(Date.now() - 120_000).toISOString() }));
    const after = await restart();
    let cur = await after.sandboxes.get(sb.id);
    for (let i = 0; i < 100 && cur.status !== 'stopped'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      cur = await after.sandboxes.get(sb.id);
    }
    expect(cur.status).toBe('stopped');
    expect(cur.error?.code).toBe('TTL_EXPIRED');
  });

  it('settles a stop that was cut short (record stopping, task stopped) as stopped', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({});
    await first.repo.update(sb.id, (s) => ({ ...s, status: 'stopping' }));
    driver.setRecoverState(sb.id, 'stopped');
    const after = await restart();
    expect((await after.sandboxes.get(sb.id)).status).toBe('stopped');
    expect((await after.sandboxes.start(sb.id)).status).toBe('running');
  });

  it('fails a sandbox cut short before its handle was saved', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({});
    await first.repo.update(sb.id, (s) => ({ ...s, status: 'starting' }));
    await first.repo.clearTask(NODE, sb.id);
    const after = await restart();
    expect(await driver.listTasks()).toEqual([]); // the orphan part works
    expect((await after.sandboxes.get(sb.id)).status).toBe('failed');
  });

  it('keeps the filesystem of a sandbox whose start (not create) was cut short', async () => {
    const { driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({});
    await first.run(sb.id, ['write', '/data', 'precious']);
    await first.sandboxes.stop(sb.id);
    await first.repo.update(sb.id, (s) => ({ ...s, status: 'starting' }));
    const after = await restart();
    expect(await driver.listTasks()).toEqual([sb.id]);
    expect(['stopped', 'running']).toContain((await after.sandboxes.get(sb.id)).status);
  });
});

describe('task handles in the store', () => {
  it('ride in the record from the running commit on, through every rewrite, and never reach a reader', async () => {
    const { store, first } = await fresh();
    const seen: Sandbox[] = [];
    const w = first.repo.watchSandboxes(await store.revision(), (_id, sb) => sb && seen.push(sb));
    cleanups.push(() => w.close());
    const sb = await first.sandboxes.create({ name: 'held' });
    const stored = async () => readSandboxValue((await store.get(`/prism/sandboxes/${sb.id}`))!.value);
    expect((await stored()).task?.id).toBe(sb.id);
    expect(await store.list('/prism/handles/')).toEqual([]);
    await first.sandboxes.stop(sb.id);
    await first.sandboxes.start(sb.id);
    await first.repo.update(sb.id, (s) => ({ ...s, labels: { touched: 'yes' } }));
    expect((await stored()).task?.id).toBe(sb.id);
    expect(await first.repo.getHandle(NODE, sb.id)).toMatchObject({ id: sb.id, runtime: 'oci' });
    expect(await first.repo.getHandle('another-node', sb.id)).toBeUndefined();
    await new Promise((r) => setTimeout(r, 50));
    expect(seen.length).toBeGreaterThan(3);
    for (const s of [await first.sandboxes.get(sb.id), ...(await first.sandboxes.list()), ...seen]) expect(s).not.toHaveProperty('task');
  });

  it('moves handles stored the old way into their records, and destroys the task of one whose record is gone', async () => {
    const { store, driver, first, restart } = await fresh();
    const sb = await first.sandboxes.create({ name: 'old' });
    await first.run(sb.id, ['write', 'f', 'kept']);
    const { sandbox: record, task } = readSandboxValue((await store.get(`/prism/sandboxes/${sb.id}`))!.value);
    await first.node.stop();
    // The layout before 2026-12: the record without its handle, the handle under /prism/handles/<node>/<id>.
    await store.put(`/prism/sandboxes/${sb.id}`, JSON.stringify(record));
    await store.put(`/prism/handles/${NODE}/${sb.id}`, JSON.stringify(task));
    const ghost = await driver.create({ ...task!.spec, id: 'sb-g0stg0stg0st' });
    await store.put(`/prism/handles/${NODE}/${ghost.id}`, JSON.stringify(ghost));
    const after = await restart();
    expect(await store.list('/prism/handles/')).toEqual([]);
    expect(await after.repo.getHandle(NODE, sb.id)).toMatchObject({ id: sb.id });
    expect(await driver.listTasks()).toEqual([sb.id]);
    expect(await after.sandboxes.get(sb.id)).toMatchObject({ status: 'running' });
    expect(await after.run('old', ['read', 'f'])).toMatchObject({ exitCode: 0, stdout: 'kept' });
  });

  it('on rejoin destroys the tasks of sandboxes deleted while it was away, not a create in flight', async () => {
    const { driver, first } = await fresh();
    const gone = await first.sandboxes.create({});
    const kept = await first.sandboxes.create({});
    // Another node deleted the record while this one was cut off: its task is still here.
    expect(await first.repo.deleteSandbox(gone)).toBe(true);
    // A driver's own task (a warm-pool one being claimed has no record yet) is not a sandbox's: left alone.
    await driver.create({ ...(await first.repo.getHandle(NODE, kept.id))!.spec, id: 'pool-0123456789ab' });
    const hold = driver.holdNextCreate();
    const creating = first.sandboxes.create({ name: 'in-flight' });
    await hold.reached;
    const reconciled = first.agent.reconcileAfterRejoin();
    await new Promise((r) => setTimeout(r, 50));
    hold.release();
    const made = await creating;
    await reconciled;
    expect((await driver.listTasks()).sort()).toEqual([kept.id, made.id, 'pool-0123456789ab'].sort());
    expect(await first.sandboxes.get(made.id)).toMatchObject({ status: 'running' });
    expect(await first.run(made.id, ['echo', 'hi'])).toMatchObject({ exitCode: 0 });
  });
});

describe('NodeAgent task watchdog', () => {
  it('marks a running sandbox whose task died failed, and says so on exec', async () => {
    const { driver, first } = await fresh();
    const sb = await first.sandboxes.create({});
    expect(await first.agent.checkTask(sb.id)).toBe(true);
    driver.setRecoverState(sb.id, 'stopped'); // its init (or VM) died
    await expect(first.run(sb.id, ['echo', 'x'])).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('is failed') });
    const cur = await first.sandboxes.get(sb.id);
    expect(cur.status).toBe('failed');
    expect(cur.error?.code).toBe('TASK_EXITED');
    // Deleting it still works and leaves nothing.
    await first.sandboxes.delete(sb.id);
    expect(await driver.listTasks()).toEqual([]);
  });

  it('finds dead tasks on its own rounds', async () => {
    const { driver, first } = await fresh();
    const a = await first.sandboxes.create({});
    const b = await first.sandboxes.create({});
    driver.vanish(a.id);
    const feed = { listSandboxes: () => first.repo.listSandboxes(), onChange: () => () => undefined };
    const watchdog = new TaskWatchdog(feed, first.agent, silentLogger, { intervalMs: 20, sweepEvery: 5 });
    await watchdog.start();
    await new Promise((r) => setTimeout(r, 150));
    watchdog.stop();
    expect((await first.sandboxes.get(a.id)).status).toBe('failed');
    expect((await first.sandboxes.get(b.id)).status).toBe('running');
  });
});
