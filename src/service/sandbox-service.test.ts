import { tmpdir } from 'node:os';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PrismError, type ErrorCode } from '../core/errors.js';
import type { ExecRecord, ExecResult } from '../core/types.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import type { ImageStore } from '../images/image-store.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { startNode } from '../daemon/node-wiring.js';
import type { ExecLimits, ExecRequest, ExecService } from './exec-service.js';
import { silentLogger } from './logger.js';
import type { CreateSandboxRequest } from './sandbox-service.js';
import { readSandboxValue } from './sandbox-repo.js';

const NODE = 'node-test';
const IMAGE = 'prism.local/base:test';

const images = oneImageStore(IMAGE, { digest: 'sha256:' + 'ab'.repeat(32), layerDirs: ['/layers/0'] });
const imageRecord = await images.get(IMAGE);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(limits: Partial<ExecLimits> = {}, opts: { directCreate?: boolean; images?: ImageStore } = {}) {
  const store = SqliteStore.open(':memory:');
  const driver = new FakeDriver();
  const node = await startNode({
    store, id: NODE, name: 'test-node', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
    images: opts.images ?? images, drivers: new Map([['oci', driver]]), runtimeInfo: [],
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
    execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600, ...limits },
    watchdogMs: 60_000, log: silentLogger, ...(opts.directCreate === undefined ? {} : { directCreate: opts.directCreate }),
  });
  cleanups.push(() => store.close(), () => node.stop());
  const { repo, agent, sandboxes, exec, scheduler, direct } = node;
  const run = (sb: string, argv: string[], req: Partial<ExecRequest> = {}) => runExec(exec, sb, { argv, ...req });
  return { store, repo, driver, agent, node: await node.nodes.publish(), sandboxes, exec, run, scheduler, direct };
}

async function runExec(exec: ExecService, sb: string, req: ExecRequest): Promise<ExecResult & { stdout: string; stderr: string }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const session = await exec.exec(sb, req, { stdout: (b) => out.push(b), stderr: (b) => err.push(b) });
  const r = await session.done;
  return { ...r, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

async function codeOf(p: Promise<unknown>): Promise<ErrorCode | string | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => (e instanceof PrismError ? e.code : `not a PrismError: ${String(e)}`),
  );
}

/** Keys of sandbox state (records with their task handles, names, exec records), leaving out node and cluster keys. */
async function sandboxKeys(store: SqliteStore): Promise<string[]> {
  return (await store.list('/prism/')).map((kv) => kv.key).filter((k) => /^\/prism\/(sandboxes|names|execs)\//.test(k));
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('SandboxService.create', () => {
  it('costs no record reads and one sandbox watch per node: waits, agent and scheduler share the watch', async () => {
    const watches = vi.spyOn(SqliteStore.prototype, 'watch');
    try {
      const { sandboxes, store } = await setup();
      // Leader, agent and waits all subscribed by now.
      expect(watches.mock.calls.filter(([prefix]) => prefix === '/prism/sandboxes/')).toHaveLength(1);
      const gets = vi.spyOn(store, 'get');
      const made = await Promise.all(Array.from({ length: 5 }, () => sandboxes.create({})));
      expect(made.map((sb) => sb.status)).toEqual(Array(5).fill('running'));
      // The creates follow their records from the watch, and the agent runs them as delivered.
      expect(gets.mock.calls.map(([key]) => key).filter((k) => /^\/prism\/sandboxes\//.test(k))).toEqual([]);
    } finally {
      watches.mockRestore();
    }
  });

  it('applies defaults, merges environments, and ends running with the image digest', async () => {
    const { sandboxes, repo, driver, run } = await setup();
    const sb = await sandboxes.create({ env: { FOO: 'bar' } });
    expect(sb).toMatchObject({
      status: 'running',
      node: NODE,
      image: IMAGE,
      runtime: 'oci',
      cpus: 1,
      memoryMb: 512,
      pidsLimit: 256,
      diskMb: 2048,
      maxOpenFiles: 4096,
      workdir: '/work',
      timeoutSec: 0,
      imageDigest: imageRecord.digest,
    });
    expect(sb.id).toMatch(/^sb-[0-9a-f]{12}$/);
    expect(sb.name).toMatch(/^[a-z]+-[a-z]+-[0-9a-f]{4}$/);
    expect(sb.startedAt).toBeDefined();
    expect(await sandboxes.get(sb.id)).toEqual(sb);
    expect((await repo.getHandle(NODE, sb.id))?.spec).toMatchObject({ layers: ['/layers/0'], cpus: 1, memoryMb: 512, pidsLimit: 256, workdir: '/work' });
    expect(await driver.listTasks()).toEqual([sb.id]);

    expect((await run(sb.id, ['pwd'])).stdout).toBe('/work\n');
    expect((await run(sb.id, ['pwd'], { cwd: '/tmp' })).stdout).toBe('/tmp\n');
    expect((await run(sb.id, ['env'], { env: { FOO: 'exec', X: '1' } })).stdout).toBe('FOO=exec\nPATH=/bin\nX=1\n');
  });

  it('keeps an explicit workdir and resources', async () => {
    const { sandboxes } = await setup();
    const sb = await sandboxes.create({ name: 'custom', workdir: '/srv', cpus: 2, memoryMb: 256, pidsLimit: 64, image: IMAGE });
    expect(sb).toMatchObject({ name: 'custom', workdir: '/srv', cpus: 2, memoryMb: 256, pidsLimit: 64 });
  });

  it('directly: writes a new sandbox once, running with its task handle, its name and the reservation in the same commit', async () => {
    const { sandboxes, store, repo, scheduler, node: self } = await setup();
    const all: { key: string; value?: string; revision: number }[] = [];
    const watch = store.watch('/prism/', await store.revision(), (e) => all.push({ key: e.key, ...(e.value === undefined ? {} : { value: e.value }), revision: e.revision }));
    cleanups.push(() => watch.close());
    const placedBefore = scheduler.stats.placed;
    const made = await Promise.all(Array.from({ length: 3 }, () => sandboxes.create({ memoryMb: 256 })));
    await sleep(50);
    for (const sb of made) {
      const mine = all.filter((w) => w.key === `/prism/sandboxes/${sb.id}`);
      expect(mine.map((w) => readSandboxValue(w.value!).sandbox.status)).toEqual(['running']);
      expect(readSandboxValue(mine[0]!.value!).task?.id).toBe(sb.id);
      const commit = all.filter((w) => w.revision === mine[0]!.revision).map((w) => w.key);
      expect(commit).toEqual(expect.arrayContaining([`/prism/names/${sb.name}`, `/prism/reservations/${self.id}`]));
      expect(await repo.idForName(sb.name)).toBe(sb.id);
    }
    expect(scheduler.stats.placed).toBe(placedBefore);
    expect((await repo.getReservation(self.id)).value).toEqual({ cpus: 3, memoryMb: 768, sandboxes: 3 });
  });

  it('directly: a node without room left sends the create to the scheduler, which refuses it; nothing is left', async () => {
    const { sandboxes, repo, driver, node: self } = await setup();
    // Placement reserves memory 1:1: 4 sandboxes of the node's whole memory / 4 fill it.
    const quarter = Math.floor(self.capacity.memoryMb / 4);
    await Promise.all(Array.from({ length: 4 }, () => sandboxes.create({ memoryMb: quarter })));
    expect(await codeOf(sandboxes.create({ name: 'one-too-many', memoryMb: quarter }))).toBe('RESOURCE_EXHAUSTED');
    expect((await sandboxes.list()).map((s) => s.name)).not.toContain('one-too-many');
    expect(await repo.idForName('one-too-many')).toBeUndefined();
    expect(await driver.listTasks()).toHaveLength(4);
  });

  it('directly: when the room went while the task was made, the task goes, the create goes to the scheduler, nothing is left', async () => {
    const { sandboxes, repo, store, driver, node: self } = await setup();
    const hold = driver.holdNextCreate();
    const creating = codeOf(sandboxes.create({ name: 'late', memoryMb: 256 }));
    await hold.reached;
    // Meanwhile the scheduler (as another writer) filled the node: the claim finds no room at its commit.
    await store.put(`/prism/reservations/${self.id}`, JSON.stringify({ cpus: 0, memoryMb: self.capacity.memoryMb, sandboxes: 1 }));
    hold.release();
    expect(await creating).toBe('RESOURCE_EXHAUSTED');
    expect(await repo.idForName('late')).toBeUndefined();
    expect(await sandboxes.list()).toEqual([]);
    expect(await driver.listTasks()).toEqual([]);
    expect((await repo.getReservation(self.id)).value).toEqual({ cpus: 0, memoryMb: self.capacity.memoryMb, sandboxes: 1 });
  });

  it('directly: a node declared dead while the task was made adds no running sandbox: UNAVAILABLE, task gone, nothing written', async () => {
    const { sandboxes, repo, store, driver, node: self } = await setup();
    const hold = driver.holdNextCreate();
    const creating = codeOf(sandboxes.create({ name: 'orphan', memoryMb: 256 }));
    await hold.reached;
    // The cluster declares the node dead (its member key gone, as when its lease runs out); the
    // scheduler's sweep of its sandboxes has run already and would never see this one.
    const reservation = await repo.getReservation(self.id);
    expect(await store.delete(`/prism/members/${self.id}`)).toBe(true);
    hold.release();
    expect(await creating).toBe('UNAVAILABLE');
    expect(await repo.idForName('orphan')).toBeUndefined();
    expect(await sandboxKeys(store)).toEqual([]);
    expect(await driver.listTasks()).toEqual([]);
    expect((await repo.getReservation(self.id)).value).toEqual(reservation.value);
  });

  it('directly: a member key written again meanwhile (re-announced, rejoined) still lets the create through', async () => {
    const { sandboxes, store, driver, node: self } = await setup();
    const hold = driver.holdNextCreate();
    const creating = sandboxes.create({ name: 'kept' });
    await hold.reached;
    const member = await store.get(`/prism/members/${self.id}`);
    await store.put(`/prism/members/${self.id}`, member!.value);
    hold.release();
    const sb = await creating;
    expect(sb.status).toBe('running');
    expect(sb.node).toBe(self.id);
    expect(await driver.listTasks()).toHaveLength(1);
  });

  it('directly: an image this node must pull first sends the create to the scheduler, where the pull shows as starting', async () => {
    // IMAGE is not on the node until pulled; the pull waits for the test.
    let pulled = false;
    let pullStarted!: () => void;
    const pulling = new Promise<void>((r) => (pullStarted = r));
    let finishPull!: () => void;
    const pullDone = new Promise<void>((r) => (finishPull = r));
    const unpulled = {
      get: (r: string) => (pulled ? images.get(r) : Promise.reject(new PrismError('NOT_FOUND', `image '${r}' not found`))),
      rootfs: (r: string) => (pulled ? images.rootfs(r) : Promise.reject(new PrismError('NOT_FOUND', `image '${r}' not found`))),
      ensure: async (r: string) => {
        pullStarted();
        await pullDone;
        pulled = true;
        return images.ensure(r);
      },
    } as unknown as ImageStore;
    const { sandboxes, store, driver, direct } = await setup({}, { images: unpulled });
    const statuses = new Map<string, string[]>();
    const watch = store.watch('/prism/sandboxes/', await store.revision(), (e) => {
      if (e.type !== 'put') return;
      const sb = readSandboxValue(e.value!).sandbox;
      statuses.set(sb.id, [...(statuses.get(sb.id) ?? []), sb.status]);
    });
    cleanups.push(() => watch.close());
    const creating = sandboxes.create({ name: 'pulls' });
    await pulling;
    // While the image is pulled, the sandbox is listed, `starting`, and no task exists yet.
    expect((await sandboxes.list()).map((s) => [s.name, s.status])).toEqual([['pulls', 'starting']]);
    expect(await driver.listTasks()).toEqual([]);
    finishPull();
    const sb = await creating;
    expect(sb.status).toBe('running');
    expect(statuses.get(sb.id)).toEqual(['scheduled', 'starting', 'running']);
    expect(direct!.stats).toMatchObject({ made: 0, pulls: 1 });
    // Now on the node: the next create of it is made directly, in one write.
    const next = await sandboxes.create({});
    await sleep(20);
    expect(statuses.get(next.id)).toEqual(['running']);
    expect(direct!.stats).toMatchObject({ made: 1, pulls: 1 });
  });

  it('on the scheduler leader, writes a new sandbox once, already placed: no pending record, its name in the same commit', async () => {
    const { sandboxes, store, repo, scheduler } = await setup({}, { directCreate: false });
    for (let i = 0; i < 200 && !scheduler.placesNew; i++) await sleep(10);
    expect(scheduler.placesNew).toBe(true);
    const writes: { id: string; status: string; revision: number }[] = [];
    const names = new Map<string, number>();
    const all: { key: string; revision: number }[] = [];
    const from = await store.revision();
    const watches = [
      store.watch('/prism/sandboxes/', from, (e) => {
        if (e.type === 'put') writes.push({ id: e.key.split('/').pop()!, status: readSandboxValue(e.value!).sandbox.status, revision: e.revision });
      }),
      store.watch('/prism/names/', from, (e) => void (e.type === 'put' && names.set(e.value!, e.revision))),
      store.watch('/prism/', from, (e) => all.push({ key: e.key, revision: e.revision })),
    ];
    cleanups.push(() => watches.forEach((w) => w.close()));
    const made = await Promise.all(Array.from({ length: 3 }, () => sandboxes.create({})));
    await sleep(50);
    for (const sb of made) {
      const mine = writes.filter((w) => w.id === sb.id);
      expect(mine.map((w) => w.status)).toEqual(['scheduled', 'running']);
      expect(names.get(sb.id)).toBe(mine[0]!.revision);
      expect(await repo.idForName(sb.name)).toBe(sb.id);
      // The node's `running` commit is the record alone: its task handle rides in it.
      expect(all.filter((w) => w.revision === mine[1]!.revision).every((w) => w.key.startsWith('/prism/sandboxes/'))).toBe(true);
    }
    // Not leading: place() takes nothing (the create then writes `pending` for a leader to place).
    scheduler.stop();
    expect(scheduler.placesNew).toBe(false);
    expect(await scheduler.place({ ...made[0]!, id: 'sb-not-placed', name: 'not-placed', status: 'pending', node: '' }, 1000)).toBeUndefined();
    expect(await repo.getSandbox('sb-not-placed')).toBeUndefined();
  });

  it('refuses a taken name with ALREADY_EXISTS; the loser leaves nothing behind', async () => {
    const { sandboxes, driver, repo } = await setup();
    const results = await Promise.allSettled([sandboxes.create({ name: 'dup' }), sandboxes.create({ name: 'dup' })]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect((lost[0]!.reason as PrismError).code).toBe('ALREADY_EXISTS');
    const winner = (won[0] as PromiseFulfilledResult<{ id: string }>).value;
    expect((await sandboxes.list()).map((s) => s.id)).toEqual([winner.id]);
    expect(await driver.listTasks()).toEqual([winner.id]);
    expect((await repo.listOwn(NODE)).flatMap((o) => (o.task ? [o.task.id] : []))).toEqual([winner.id]);
    expect(await codeOf(sandboxes.create({ name: 'dup' }))).toBe('ALREADY_EXISTS');
    expect(await sandboxes.list()).toHaveLength(1);
  });

  it('rejects invalid names, env keys and relative workdirs with INVALID_ARGUMENT, writing nothing', async () => {
    const { sandboxes, store, driver } = await setup();
    const before = await store.revision();
    const bad: CreateSandboxRequest[] = [
      { name: 'Upper' },
      { name: '-lead' },
      { name: 'trail-' },
      { name: 'under_score' },
      { name: 'a'.repeat(64) },
      { name: '' },
      { env: { '1X': 'v' } },
      { env: { 'A-B': 'v' } },
      { env: { '': 'v' } },
      { workdir: 'relative/dir' },
    ];
    for (const req of bad) expect(await codeOf(sandboxes.create(req)), JSON.stringify(req)).toBe('INVALID_ARGUMENT');
    expect(await store.revision()).toBe(before);
    // Valid but impossible: placement refuses it, and the record it wrote is gone again.
    const keys = await sandboxKeys(store);
    expect(await codeOf(sandboxes.create({ runtime: 'microvm' }))).toBe('FAILED_PRECONDITION');
    expect(await sandboxKeys(store)).toEqual(keys);
    expect(await driver.listTasks()).toEqual([]);
    // The longest valid name is accepted.
    expect((await sandboxes.create({ name: 'a'.repeat(63) })).status).toBe('running');
  });

  it('answers NOT_FOUND for an unknown image and leaves nothing behind', async () => {
    const { sandboxes, store, driver, repo } = await setup();
    const before = await sandboxKeys(store);
    expect(await codeOf(sandboxes.create({ name: 'x', image: 'nosuch:latest' }))).toBe('NOT_FOUND');
    expect(await sandboxKeys(store)).toEqual(before);
    expect((await repo.getReservation(NODE)).value).toEqual({ cpus: 0, memoryMb: 0, sandboxes: 0 });
    expect(await driver.listTasks()).toEqual([]);
    expect(await codeOf(sandboxes.create({ image: 'bad ref!' }))).toBe('INVALID_ARGUMENT');
  });

  it('leaves no record, handle, task or name behind when the driver fails', async () => {
    const { sandboxes, driver, repo } = await setup();
    driver.failNextCreate(new PrismError('RESOURCE_EXHAUSTED', 'no loop devices left'));
    expect(await codeOf(sandboxes.create({ name: 'doomed' }))).toBe('RESOURCE_EXHAUSTED');
    expect(await sandboxes.list()).toEqual([]);
    expect(await repo.listOwn(NODE)).toEqual([]);
    expect(await repo.idForName('doomed')).toBeUndefined();
    expect(await driver.listTasks()).toEqual([]);
    expect((await sandboxes.create({ name: 'doomed' })).status).toBe('running');

    driver.failNextCreate(new Error('runc exploded'));
    expect(await codeOf(sandboxes.create({ name: 'plain-error' }))).toBe('INTERNAL');
    expect(await repo.idForName('plain-error')).toBeUndefined();
  });

  it('refuses with RESOURCE_EXHAUSTED when memory exceeds the node, writing nothing', async (ctx) => {
    const { sandboxes, node, store } = await setup();
    const memoryMb = 262144;
    // Placement lets sandboxes reserve 90% of the node's memory; a machine with more cannot show this.
    if (node.resources.memoryBytes / 2 ** 20 * 0.9 >= memoryMb) ctx.skip();
    const before = await sandboxKeys(store);
    const err = await sandboxes.create({ name: 'huge', memoryMb }).catch((e: unknown) => e as PrismError);
    expect(err).toBeInstanceOf(PrismError);
    expect((err as PrismError).code).toBe('RESOURCE_EXHAUSTED');
    expect((err as PrismError).message).toContain('MiB unreserved');
    expect(await sandboxKeys(store)).toEqual(before);
  });
});

describe('the user commands run as', () => {
  it('is an unprivileged default when neither the request nor the image names one; root only when asked', async () => {
    const { sandboxes, repo } = await setup();
    const plain = await sandboxes.create({});
    expect(plain.user).toBe('65534:65534');
    expect((await repo.getHandle(NODE, plain.id))?.spec.user).toBe('65534:65534');
    const asked = await sandboxes.create({ user: '1234:5678' });
    expect((await repo.getHandle(NODE, asked.id))?.spec.user).toBe('1234:5678');
    const root = await sandboxes.create({ user: 'root' });
    expect((await repo.getHandle(NODE, root.id))?.spec.user).toBeUndefined();
  });
});

describe('SandboxService.get', () => {
  it('finds by id and by exact name, never by prefix', async () => {
    const { sandboxes } = await setup();
    const sb = await sandboxes.create({ name: 'findme' });
    expect((await sandboxes.get(sb.id)).id).toBe(sb.id);
    expect((await sandboxes.get('findme')).id).toBe(sb.id);
    for (const partial of [sb.id.slice(0, 6), 'find', 'findm', 'findme-', '']) {
      expect(await codeOf(sandboxes.get(partial)), partial).toBe('NOT_FOUND');
    }
  });
});

describe('SandboxService lifecycle', () => {
  it('stop refuses exec; start runs again on the same files', async () => {
    const { sandboxes, run, exec } = await setup();
    const sb = await sandboxes.create({ name: 'life' });
    expect((await run('life', ['write', 'data.txt', 'persist', 'me'])).exitCode).toBe(0);
    const stopped = await sandboxes.stop('life');
    expect(stopped.status).toBe('stopped');
    expect(stopped.stoppedAt).toBeDefined();
    expect(stopped.error).toBeUndefined();
    expect((await sandboxes.stop('life')).status).toBe('stopped'); // idempotent
    expect(await codeOf(exec.exec('life', { argv: ['echo'] }, { stdout() {}, stderr() {} }))).toBe('FAILED_PRECONDITION');
    const started = await sandboxes.start(sb.id);
    expect(started.status).toBe('running');
    expect(started.stoppedAt).toBeUndefined();
    expect((await sandboxes.start(sb.id)).status).toBe('running'); // idempotent
    expect(await run('life', ['read', '/work/data.txt'])).toMatchObject({ exitCode: 0, stdout: 'persist me' });
  });

  it('delete removes the record, name, handle, exec records and task', async () => {
    const { sandboxes, repo, driver, run, exec } = await setup();
    const sb = await sandboxes.create({ name: 'gone-soon' });
    await run(sb.id, ['echo', 'one']);
    await run(sb.id, ['echo', 'two']);
    expect(await exec.logs(sb.id)).toHaveLength(2);
    await sandboxes.delete('gone-soon');
    expect(await codeOf(sandboxes.get(sb.id))).toBe('NOT_FOUND');
    expect(await codeOf(sandboxes.get('gone-soon'))).toBe('NOT_FOUND');
    expect(await repo.idForName('gone-soon')).toBeUndefined();
    expect(await repo.getHandle(NODE, sb.id)).toBeUndefined();
    expect(await repo.listExecs(sb.id)).toEqual([]);
    expect(await driver.listTasks()).toEqual([]);
    expect((await sandboxes.create({ name: 'gone-soon' })).status).toBe('running');
  });

  it('a stopped sandbox can be deleted too', async () => {
    const { sandboxes, driver } = await setup();
    const sb = await sandboxes.create({});
    await sandboxes.stop(sb.id);
    await sandboxes.delete(sb.id);
    expect(await sandboxes.list()).toEqual([]);
    expect(await driver.listTasks()).toEqual([]);
  });

  it('a stop whose task vanished marks the sandbox failed, and it can still be deleted', async () => {
    const { sandboxes, driver, repo } = await setup();
    const sb = await sandboxes.create({});
    driver.vanish(sb.id);
    expect(await codeOf(sandboxes.stop(sb.id))).toBe('NOT_FOUND');
    const failed = await sandboxes.get(sb.id);
    expect(failed.status).toBe('failed');
    expect(failed.error?.code).toBe('STOP_FAILED');
    expect(await codeOf(sandboxes.start(sb.id))).toBe('FAILED_PRECONDITION');
    await sandboxes.delete(sb.id);
    expect(await sandboxes.list()).toEqual([]);
    expect(await repo.listOwn(NODE)).toEqual([]);
  });

  it('stops a sandbox when its timeoutSec runs out, with error TTL_EXPIRED', async () => {
    const { sandboxes, driver } = await setup();
    const t0 = Date.now();
    const sb = await sandboxes.create({ timeoutSec: 1 });
    let cur = sb;
    while (cur.status === 'running' && Date.now() - t0 < 5000) {
      await sleep(50);
      cur = await sandboxes.get(sb.id);
    }
    expect(cur.status).toBe('stopped');
    expect(cur.error?.code).toBe('TTL_EXPIRED');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(await driver.inspect({ id: sb.id, runtime: 'oci', spec: {} as never, data: {} })).toBe('stopped');
    // Starting again clears the reason.
    const again = await sandboxes.start(sb.id);
    expect(again.error).toBeUndefined();
    await sandboxes.stop(sb.id);
  });

  it('deletes instead when onTimeout is delete, leaving nothing', async () => {
    const { sandboxes, store, driver } = await setup();
    const sb = await sandboxes.create({ timeoutSec: 1, onTimeout: 'delete' });
    expect(sb.onTimeout).toBe('delete');
    const deadline = Date.now() + 5000;
    while ((await sandboxes.list()).length && Date.now() < deadline) await sleep(50);
    expect(await codeOf(sandboxes.get(sb.id))).toBe('NOT_FOUND');
    expect(await sandboxKeys(store)).toEqual([]);
    expect(await driver.inspect({ id: sb.id, runtime: 'oci', spec: {} as never, data: {} })).toBe('gone');
  });

  it('setTimeout counts from now, extends or shortens, 0 disarms; only while running', async () => {
    const { sandboxes } = await setup();
    const sb = await sandboxes.create({ timeoutSec: 3600 });
    // Shortened to 1 s from now: it stops about then.
    const set = await sandboxes.setTimeout(sb.name, 1);
    expect(set.timeoutSec).toBeGreaterThanOrEqual(1);
    expect(set.timeoutSec).toBeLessThanOrEqual(2);
    const deadline = Date.now() + 5000;
    let cur = set;
    while (cur.status === 'running' && Date.now() < deadline) cur = (await sleep(50), await sandboxes.get(sb.id));
    expect(cur).toMatchObject({ status: 'stopped', error: { code: 'TTL_EXPIRED' } });
    expect(await codeOf(sandboxes.setTimeout(sb.id, 10))).toBe('FAILED_PRECONDITION');
    // Started again with a short timeout, then disarmed: it keeps running past it.
    await sandboxes.start(sb.id);
    expect((await sandboxes.setTimeout(sb.id, 1)).timeoutSec).toBeLessThanOrEqual(2);
    expect((await sandboxes.setTimeout(sb.id, 0)).timeoutSec).toBe(0);
    await sleep(1500);
    expect((await sandboxes.get(sb.id)).status).toBe('running');
    expect(await codeOf(sandboxes.setTimeout('nope', 1))).toBe('NOT_FOUND');
  });

  it('keeps metadata and lists by it and by status', async () => {
    const { sandboxes } = await setup();
    const a = await sandboxes.create({ metadata: { user: 'u 1', team: 'x' } });
    const b = await sandboxes.create({ metadata: { user: 'u2' } });
    await sandboxes.create({});
    expect(a.metadata).toEqual({ user: 'u 1', team: 'x' });
    expect((await sandboxes.list({ metadata: { user: 'u 1' } })).map((s) => s.id)).toEqual([a.id]);
    expect((await sandboxes.list({ metadata: { user: 'u 1', team: 'y' } }))).toEqual([]);
    await sandboxes.stop(b.id);
    expect((await sandboxes.list({ status: ['stopped'] })).map((s) => s.id)).toEqual([b.id]);
    expect(await sandboxes.list()).toHaveLength(3);
  });

  it('gives every sandbox its own secrets', async () => {
    const { sandboxes, repo } = await setup();
    const [a, b] = [await sandboxes.create({}), await sandboxes.create({})];
    const sa = (await repo.getSandbox(a.id))!.value.secrets!;
    const sb = (await repo.getSandbox(b.id))!.value.secrets!;
    expect(sa.access).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(new Set([sa.access, sa.traffic, sb.access, sb.traffic]).size).toBe(4);
  });
});

describe('ExecService', () => {
  it('reports exit codes and unknown commands', async () => {
    const { sandboxes, run } = await setup();
    const sb = await sandboxes.create({});
    expect(await run(sb.id, ['echo', 'hi'])).toMatchObject({ exitCode: 0, stdout: 'hi\n', timedOut: false, oomKilled: false });
    expect(await run(sb.id, ['exit', '42'])).toMatchObject({ exitCode: 42 });
    const nf = await run(sb.id, ['python3']);
    expect(nf.exitCode).toBe(127);
    expect(nf.stderr).toContain('not found');
    expect(await run(sb.id, ['cat'], { stdin: Buffer.from('from stdin') })).toMatchObject({ exitCode: 0, stdout: 'from stdin' });
  });

  it('rejects empty commands, bad timeouts and relative cwd with INVALID_ARGUMENT', async () => {
    const { sandboxes, exec } = await setup();
    const sb = await sandboxes.create({});
    const sink = { stdout() {}, stderr() {} };
    for (const req of [{ argv: [] }, { argv: [''] }, { argv: ['echo'], timeoutSec: 0 }, { argv: ['echo'], timeoutSec: -1 }, { argv: ['echo'], timeoutSec: 3601 }, { argv: ['echo'], cwd: 'tmp' }]) {
      expect(await codeOf(exec.exec(sb.id, req, sink)), JSON.stringify(req)).toBe('INVALID_ARGUMENT');
    }
    expect(await codeOf(exec.exec('no-such-sandbox', { argv: ['echo'] }, sink))).toBe('NOT_FOUND');
  });

  it('kills a command at its timeout and says so', async () => {
    const { sandboxes, run, exec } = await setup();
    const sb = await sandboxes.create({});
    const t0 = Date.now();
    const r = await run(sb.id, ['sleep', '10000'], { timeoutSec: 0.2 });
    expect(r).toMatchObject({ timedOut: true, exitCode: 137, signal: 'SIGKILL' });
    expect(Date.now() - t0).toBeLessThan(3000);
    expect((await exec.logs(sb.id))[0]).toMatchObject({ cmd: ['sleep', '10000'], timedOut: true });
    // A command that finishes in time is not marked.
    expect((await run(sb.id, ['echo'], { timeoutSec: 5 })).timedOut).toBe(false);
  });

  it('cancel() kills the command', async () => {
    const { sandboxes, exec } = await setup();
    const sb = await sandboxes.create({});
    const session = await exec.exec(sb.id, { argv: ['sleep', '10000'] }, { stdout() {}, stderr() {} });
    session.cancel();
    expect(await session.done).toMatchObject({ signal: 'SIGKILL', timedOut: false });
  });

  it('keeps only the last recordsPerSandbox exec records, oldest first', async () => {
    const { sandboxes, run, exec } = await setup({ recordsPerSandbox: 3 });
    const sb = await sandboxes.create({});
    for (let i = 1; i <= 5; i++) await run(sb.id, ['echo', String(i)]);
    const logs = await exec.logs(sb.id);
    expect(logs.map((l) => l.stdout)).toEqual(['3\n', '4\n', '5\n']);
    expect(logs[0]).toMatchObject({ sandboxId: sb.id, cmd: ['echo', '3'], exitCode: 0, encoding: 'utf8', truncated: false });
  });

  it('cuts stored output at recordBytes and flags it, while the live stream is complete', async () => {
    const { sandboxes, run, exec } = await setup({ recordBytes: 8 });
    const sb = await sandboxes.create({});
    const r = await run(sb.id, ['echo', 'abcdefghijklmnop']);
    expect(r.stdout).toBe('abcdefghijklmnop\n');
    await run(sb.id, ['echo', 'short']);
    const [long, short] = await exec.logs(sb.id);
    expect(long).toMatchObject({ stdout: 'abcdefgh', truncated: true });
    expect(short).toMatchObject({ stdout: 'short\n', truncated: false });
  });

  it('names the limit a command hit as a stable code, and none when it hit none', async () => {
    const { sandboxes, run, exec } = await setup();
    const sb = await sandboxes.create({});
    expect(await run(sb.id, ['sleep', '5000'], { timeoutSec: 0.05 })).toMatchObject({ timedOut: true, limitExceeded: 'TIMEOUT' });
    const ok = await run(sb.id, ['echo', 'x']);
    expect(ok).toMatchObject({ timedOut: false, oomKilled: false, diskFull: false });
    expect(ok.limitExceeded).toBeUndefined();
    expect((await exec.logs(sb.id))[0]).toMatchObject({ limitExceeded: 'TIMEOUT' });
  });

  it('pauses a command\'s output while the sink is not drained, then delivers all of it', async () => {
    const { sandboxes, exec } = await setup();
    const sb = await sandboxes.create({});
    const out: Buffer[] = [];
    let release!: () => void;
    const drained = new Promise<void>((r) => (release = r));
    let waits = 0;
    const session = await exec.exec(sb.id, { argv: ['bytes', '41424344'] }, {
      stdout: (b) => (out.push(b), false),
      stderr: () => undefined,
      drained: () => (waits++, drained),
    });
    const settled = await Promise.race([session.done.then(() => 'done'), new Promise((r) => setTimeout(() => r('waiting'), 50))]);
    expect(settled).toBe('waiting');
    expect(waits).toBe(1);
    release();
    expect((await session.done).exitCode).toBe(0);
    expect(Buffer.concat(out).toString()).toBe('ABCD');
  });

  it('stores non-UTF-8 output as base64 of the exact bytes', async () => {
    const { sandboxes, run, exec } = await setup();
    const sb = await sandboxes.create({});
    await run(sb.id, ['bytes', '00ff41']);
    const [rec] = await exec.logs(sb.id);
    expect(rec!.encoding).toBe('base64');
    expect(Buffer.from(rec!.stdout, 'base64')).toEqual(Buffer.from([0x00, 0xff, 0x41]));
  });

  it('keeps a record for every one of several concurrent execs', async () => {
    const { sandboxes, exec, run } = await setup();
    const sb = await sandboxes.create({});
    const n = 8;
    const results = await Promise.all(Array.from({ length: n }, (_, i) => run(sb.id, ['echo', `n${i}`])));
    expect(results.every((r) => r.exitCode === 0)).toBe(true);
    const logs = await exec.logs(sb.id);
    expect(logs.map((l) => l.stdout).sort()).toEqual(Array.from({ length: n }, (_, i) => `n${i}\n`).sort());
    expect(new Set(logs.map((l) => l.id)).size).toBe(n);
  });
});

describe('SandboxRepo.appendExec', () => {
  it('keeps every record when 20 are appended concurrently', async () => {
    const { repo } = await setup();
    const n = 20;
    const rec = (i: number): ExecRecord => ({
      id: `ex-${i}`,
      sandboxId: 'sb-000000000001',
      cmd: ['echo', String(i)],
      diskFull: false,
      startedAt: new Date().toISOString(),
      stdout: '',
      stderr: '',
      encoding: 'utf8',
      truncated: false,
      exitCode: 0,
      timedOut: false,
      oomKilled: false,
      durationMs: 0,
    });
    const settled = await Promise.allSettled(Array.from({ length: n }, (_, i) => repo.appendExec(rec(i), 100)));
    expect(settled.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(await repo.listExecs('sb-000000000001')).toHaveLength(n);
  });
});

describe('pause and resume (fake runtime)', () => {
  it('pauses and resumes; exec resumes a paused sandbox first unless autoResume is false', async () => {
    const { sandboxes, driver, run } = await setup();
    const sb = await sandboxes.create({});
    const handle = { id: sb.id, runtime: 'oci' as const, spec: {} as never, data: {} };
    const paused = await sandboxes.pause(sb.id);
    expect(paused).toMatchObject({ status: 'paused', pausedAt: expect.any(String) });
    expect(await driver.inspect(handle)).toBe('paused');
    expect((await sandboxes.pause(sb.id)).status).toBe('paused'); // idempotent
    expect((await run(sb.id, ['echo', 'x'])).exitCode).toBe(0); // auto-resumed
    expect((await sandboxes.get(sb.id)).status).toBe('running');
    expect((await sandboxes.get(sb.id)).pausedAt).toBeUndefined();

    const strict = await sandboxes.create({ autoResume: false });
    await sandboxes.pause(strict.id);
    expect(await codeOf(run(strict.id, ['echo', 'x']))).toBe('FAILED_PRECONDITION');
    expect((await sandboxes.resume(strict.id)).status).toBe('running');
    expect((await run(strict.id, ['echo', 'x'])).exitCode).toBe(0);
  });

  it('refuses pause outside running and resume outside paused with FAILED_PRECONDITION; stop and delete work on a paused one', async () => {
    const { sandboxes, driver, store } = await setup();
    const sb = await sandboxes.create({});
    await sandboxes.stop(sb.id);
    expect(await codeOf(sandboxes.pause(sb.id))).toBe('FAILED_PRECONDITION');
    expect(await codeOf(sandboxes.resume(sb.id))).toBe('FAILED_PRECONDITION');
    await sandboxes.start(sb.id);
    await sandboxes.pause(sb.id);
    const stopped = await sandboxes.stop(sb.id);
    expect(stopped.status).toBe('stopped');
    expect(await driver.inspect({ id: sb.id, runtime: 'oci', spec: {} as never, data: {} })).toBe('stopped');
    await sandboxes.start(sb.id);
    await sandboxes.pause(sb.id);
    await sandboxes.delete(sb.id);
    expect(await sandboxKeys(store)).toEqual([]);
  });

  it('says UNIMPLEMENTED for a runtime that cannot pause', async () => {
    const store = SqliteStore.open(':memory:');
    const node = await startNode({
      store, id: NODE, name: 'test-node', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
      images, drivers: new Map([['oci', new FakeDriver({ capabilities: { pause: undefined } })]]), runtimeInfo: [],
      defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
      labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
      execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600 }, watchdogMs: 60_000, log: silentLogger,
    });
    cleanups.push(() => store.close(), () => node.stop());
    await node.nodes.publish();
    const sb = await node.sandboxes.create({});
    expect(await codeOf(node.sandboxes.pause(sb.id))).toBe('UNIMPLEMENTED');
    expect((await node.sandboxes.get(sb.id)).status).toBe('running');
  });

  it('onTimeout pause pauses at the timeout; the pause stops the clock', async () => {
    const { sandboxes } = await setup();
    const sb = await sandboxes.create({ timeoutSec: 1, onTimeout: 'pause' });
    const deadline = Date.now() + 5000;
    let cur = sb;
    while (cur.status !== 'paused' && Date.now() < deadline) cur = (await sleep(50), await sandboxes.get(sb.id));
    expect(cur.status).toBe('paused');
    await sleep(1200);
    const resumed = await sandboxes.resume(sb.id);
    // The pause lasted over a second: the timeout ends that much later.
    expect(resumed.timeoutSec).toBeGreaterThanOrEqual(2);
    expect(resumed.status).toBe('running');
    await sandboxes.delete(sb.id);
  });
});

describe('racing lifecycle calls (one transition table, each step a compare-and-swap)', () => {
  const settle = <T,>(p: Promise<T>) => p.then((v) => ({ ok: true as const, v }), (e: unknown) => ({ ok: false as const, e }));
  const codes = [ 'FAILED_PRECONDITION', 'NOT_FOUND', 'CONFLICT' ];

  it('delete || stop, delete || start, delete || pause || stop, delete || resume: no resurrection, no 5xx code, nothing left', async () => {
    const { sandboxes, store, driver } = await setup();
    for (let round = 0; round < 10; round++) {
      const sb = await sandboxes.create({});
      const ops: Promise<unknown>[] = [sandboxes.delete(sb.id)];
      if (round % 4 === 0) ops.push(sandboxes.stop(sb.id));
      if (round % 4 === 1) ops.push(sandboxes.stop(sb.id).then(() => sandboxes.start(sb.id)));
      if (round % 4 === 2) ops.push(sandboxes.pause(sb.id), sandboxes.stop(sb.id));
      if (round % 4 === 3) ops.push(sandboxes.pause(sb.id).then(() => sandboxes.resume(sb.id)));
      const results = await Promise.all(ops.map(settle));
      for (const r of results) if (!r.ok) expect(codes, String(r.e)).toContain((r.e as PrismError).code);
      expect(await codeOf(sandboxes.get(sb.id))).toBe('NOT_FOUND');
      expect(await driver.inspect({ id: sb.id, runtime: 'oci', spec: {} as never, data: {} })).toBe('gone');
    }
    expect(await sandboxKeys(store)).toEqual([]);
  });

  it('a create that loses to a delete answers CONFLICT, not a retry, and leaves nothing', async () => {
    const { sandboxes, repo, store } = await setup();
    const deleted: string[] = [];
    const stopWatch = repo.watchSandboxes(await repo.revision(), (id, sb) => {
      if (sb && sb.status !== 'pending' && !deleted.includes(id)) {
        deleted.push(id);
        void sandboxes.delete(id).catch(() => undefined);
      }
    }, () => undefined);
    try {
      const err = await sandboxes.create({}).then(() => undefined, (e: unknown) => e as PrismError);
      if (err) {
        expect(err.code).toBe('CONFLICT');
        expect(err.retryable).toBe(false);
      }
      await sleep(200);
      expect(await sandboxKeys(store)).toEqual([]);
    } finally {
      stopWatch.close();
    }
  });

  it('the table refuses writes that are not transitions', async () => {
    const { sandboxes, repo } = await setup();
    const sb = await sandboxes.create({});
    await sandboxes.stop(sb.id);
    expect(await codeOf(repo.transition(sb.id, ['stopped'], 'paused'))).toBe('INTERNAL');
    expect(await codeOf(repo.transition(sb.id, ['running'], 'stopping'))).toBe('FAILED_PRECONDITION');
    expect(await repo.transition(sb.id, ['running'], 'stopping', (s) => s, { quiet: true })).toBeUndefined();
    expect((await sandboxes.get(sb.id)).status).toBe('stopped');
  });
});

describe('timeouts of paused and long-lived sandboxes', () => {
  it('deletes a sandbox paused longer than --paused-ttl; a resume in time keeps it', async () => {
    const store = SqliteStore.open(':memory:');
    const node = await startNode({
      store, id: NODE, name: 'test-node', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
      images, drivers: new Map([['oci', new FakeDriver()]]), runtimeInfo: [],
      defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
      labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000, pausedTtlMs: 400,
      execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600 }, watchdogMs: 60_000, log: silentLogger,
    });
    cleanups.push(() => store.close(), () => node.stop());
    await node.nodes.publish();
    const { sandboxes } = node;
    const kept = await sandboxes.create({});
    const gone = await sandboxes.create({});
    await sandboxes.pause(kept.id);
    await sandboxes.pause(gone.id);
    await sleep(200);
    await sandboxes.resume(kept.id);
    const deadline = Date.now() + 3000;
    while ((await codeOf(sandboxes.get(gone.id))) !== 'NOT_FOUND' && Date.now() < deadline) await sleep(50);
    expect(await codeOf(sandboxes.get(gone.id))).toBe('NOT_FOUND');
    await sleep(400);
    expect((await sandboxes.get(kept.id)).status).toBe('running');
  });

  it('a timeout past 24.8 days (the longest setTimeout) does not fire at once', async () => {
    const { sandboxes } = await setup();
    const sb = await sandboxes.create({ timeoutSec: 30 * 86400 });
    await sleep(150);
    expect((await sandboxes.get(sb.id)).status).toBe('running');
  });
});
