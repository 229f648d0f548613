import { tmpdir } from 'node:os';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import { startNode } from '../daemon/node-wiring.js';
import type { ImageRecord, ImageStore, Rootfs } from '../images/image-store.js';
import type { RuntimeImage } from '../runtime/driver.js';
import { FakeDriver, type FakeDriverOptions } from '../runtime/fake/fake-driver.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { silentLogger } from './logger.js';
import { resolveTaskImage } from './task-image.js';

/** Prism's image store with `local` images and a registry it can pull `remote` from; records its pulls. */
function fakeStore(local: string[], remote: string[] = []) {
  const have = new Set(local);
  const pulls: string[] = [];
  const record = (ref: string): ImageRecord => ({
    refs: [ref], digest: `sha256:${'5'.repeat(64)}`, size: 1, createdAt: '2024-01-01T00:00:00.000Z', os: 'linux', architecture: 'amd64',
    config: { env: ['FROM=store'], workingDir: '/store' }, layers: [],
  });
  const store = {
    async get(ref: string): Promise<ImageRecord> {
      if (!have.has(ref)) throw new PrismError('NOT_FOUND', `image '${ref}' not found`);
      return record(ref);
    },
    async ensure(ref: string): Promise<ImageRecord> {
      if (!have.has(ref)) {
        pulls.push(ref);
        if (!remote.includes(ref)) throw new PrismError('NOT_FOUND', `image '${ref}' not found in its registry`);
        have.add(ref);
      }
      return record(ref);
    },
    async rootfs(ref: string): Promise<Rootfs> {
      return { image: await store.get(ref), layerDirs: [`/layers/${ref}`] };
    },
  };
  return { images: store as unknown as ImageStore, pulls };
}

const engineImage = (id: string, over: Partial<RuntimeImage> = {}): RuntimeImage => ({ id: `sha256:${id.repeat(64)}`, env: ['FROM=engine'], workingDir: '/app', user: '1000:1000', ...over });

/** Pulls reported to telemetry, as `store outcome` (durations are checked in the metrics tests). */
const observed: string[] = [];
const telemetry = { observePull: (store: string, _seconds: number, ok: boolean) => void observed.push(`${store} ${ok ? 'ok' : 'error'}`) };
beforeEach(() => void observed.splice(0));

/** Resolves `ref` and says whether `beforePull` (the agent's `starting`) ran. */
async function resolve(ref: string, driver: FakeDriver, images: ImageStore) {
  let starting = 0;
  const image = await resolveTaskImage(ref, driver, images, async () => void starting++, telemetry);
  return { image, starting };
}

describe('resolveTaskImage, for a runtime with images of its own (docker)', () => {
  const own = (o: NonNullable<FakeDriverOptions['ownImages']>) => new FakeDriver({ name: 'docker', ownImages: o });

  it('uses the runtime\'s image as it is, with its config, and pulls nothing', async () => {
    const driver = own({ local: { 'myapp:dev': engineImage('a') } });
    const { images, pulls } = fakeStore([]);
    const { image, starting } = await resolve('myapp:dev', driver, images);
    expect(image).toEqual({ digest: engineImage('a').id, runtimeImage: engineImage('a').id, layers: [], env: ['FROM=engine'], workingDir: '/app', user: '1000:1000' });
    expect(starting).toBe(0);
    expect([...pulls, ...driver.pulls]).toEqual([]);
  });

  it('prefers the runtime\'s image when Prism\'s store has a tag of the same name', async () => {
    const driver = own({ local: { 'python:3.12': engineImage('b') } });
    const { images } = fakeStore(['python:3.12']);
    expect((await resolve('python:3.12', driver, images)).image.runtimeImage).toBe(engineImage('b').id);
  });

  it('falls back to Prism\'s store (its layers) when the runtime lacks the name, pulling nothing', async () => {
    const driver = own({ registry: { 'prism.local/base:bookworm': engineImage('c') } });
    const { images, pulls } = fakeStore(['prism.local/base:bookworm']);
    const { image, starting } = await resolve('prism.local/base:bookworm', driver, images);
    expect(image).toEqual({ digest: `sha256:${'5'.repeat(64)}`, layers: ['/layers/prism.local/base:bookworm'], env: ['FROM=store'], workingDir: '/store' });
    expect(starting).toBe(0);
    expect([...pulls, ...driver.pulls]).toEqual([]);
  });

  it('has the runtime pull what neither has, never Prism\'s registry client', async () => {
    const driver = own({ registry: { '127.0.0.1:5000/app:1': engineImage('d', { user: undefined }) } });
    const { images, pulls } = fakeStore([], ['127.0.0.1:5000/app:1']);
    const { image, starting } = await resolve('127.0.0.1:5000/app:1', driver, images);
    expect(image).toEqual({ digest: engineImage('d').id, runtimeImage: engineImage('d').id, layers: [], env: ['FROM=engine'], workingDir: '/app' });
    expect(starting).toBe(1);
    expect(driver.pulls).toEqual(['127.0.0.1:5000/app:1']);
    expect(pulls).toEqual([]);
    expect(observed.splice(0)).toEqual(['docker ok']);
    // Pulled once: the next sandbox finds it in the runtime.
    expect((await resolve('127.0.0.1:5000/app:1', driver, images)).starting).toBe(0);
  });

  it('answers NOT_FOUND naming the reference when no source has it', async () => {
    const driver = own({});
    const { images } = fakeStore([]);
    const err = await resolve('nosuch:1', driver, images).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrismError);
    expect((err as PrismError).code).toBe('NOT_FOUND');
    expect((err as PrismError).message).toMatch(/^image 'nosuch:1' not found: neither the docker runtime nor Prism's image store has it/);
    expect(observed.splice(0)).toEqual(['docker error']);
  });

  it('passes the runtime\'s other pull errors on with their codes', async () => {
    for (const code of ['UNAUTHENTICATED', 'PERMISSION_DENIED', 'UNAVAILABLE'] as const) {
      const driver = own({ registry: { 'private/app:1': new PrismError(code, `pulling 'private/app:1': refused (${code})`) } });
      const err = await resolve('private/app:1', driver, fakeStore([]).images).catch((e: unknown) => e);
      expect((err as PrismError).code).toBe(code);
    }
  });
});

describe('resolveTaskImage, for every other runtime', () => {
  it('uses Prism\'s store, pulling into it when it lacks the image', async () => {
    const driver = new FakeDriver({ name: 'oci' });
    const { images, pulls } = fakeStore(['have:1'], ['remote:1']);
    expect(await resolve('have:1', driver, images)).toMatchObject({ image: { layers: ['/layers/have:1'] }, starting: 0 });
    expect(await resolve('remote:1', driver, images)).toMatchObject({ image: { layers: ['/layers/remote:1'] }, starting: 1 });
    expect(pulls).toEqual(['remote:1']);
    expect(driver.pulls).toEqual([]);
    // Only the pull is reported, not the image found in place; a failed pull as an error.
    expect(observed.splice(0)).toEqual(['prism ok']);
    await expect(resolve('absent:1', driver, images)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(observed.splice(0)).toEqual(['prism error']);
  });

  it('never asks a runtime that does not declare ownImages', async () => {
    const driver = new FakeDriver({ name: 'oci', ownImages: { local: { 'x:1': engineImage('e') } }, capabilities: { ownImages: false } });
    const { images } = fakeStore(['x:1']);
    expect((await resolve('x:1', driver, images)).image.runtimeImage).toBeUndefined();
  });
});

describe('creating a sandbox from a runtime\'s own image', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function setup(driver: FakeDriver) {
    const store = SqliteStore.open(':memory:');
    const node = await startNode({
      store, id: 'node-test', name: 'test-node', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
      images: fakeStore([]).images, drivers: new Map([['docker', driver]]), runtimeInfo: [],
      defaults: { image: 'prism.local/base:test', runtime: 'docker', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
      labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
      execLimits: { recordBytes: 1 << 16, recordsPerSandbox: 10, maxTimeoutSec: 3600 },
      watchdogMs: 60_000, log: silentLogger,
    });
    cleanups.push(() => store.close(), () => node.stop());
    return node;
  }

  it('gives the task the runtime\'s image and applies its env, workdir and user', async () => {
    const driver = new FakeDriver({ name: 'docker', ownImages: { local: { 'myapp:dev': engineImage('f') } } });
    const { sandboxes, repo } = await setup(driver);
    const sb = await sandboxes.create({ image: 'myapp:dev', env: { EXTRA: '1' } });
    expect(sb).toMatchObject({ status: 'running', image: 'myapp:dev', imageDigest: engineImage('f').id, workdir: '/app', user: '1000:1000' });
    expect((await repo.getHandle('node-test', sb.id))?.spec).toMatchObject({ image: engineImage('f').id, layers: [], env: { FROM: 'engine', EXTRA: '1' }, user: '1000:1000' });
  });

  it('answers NOT_FOUND for a reference nothing has, leaving no record, name, handle or task', async () => {
    const driver = new FakeDriver({ name: 'docker', ownImages: {} });
    const { sandboxes, repo } = await setup(driver);
    const err = await sandboxes.create({ name: 'ghost', image: 'nosuch:1' }).catch((e: unknown) => e);
    expect((err as PrismError).code).toBe('NOT_FOUND');
    expect((err as PrismError).message).toContain("'nosuch:1'");
    expect(await sandboxes.list()).toEqual([]);
    expect(await repo.idForName('ghost')).toBeUndefined();
    expect(await repo.listOwn('node-test')).toEqual([]);
    expect(await driver.listTasks()).toEqual([]);
  });
});
