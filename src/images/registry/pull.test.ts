import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ContentStore } from '../content/content-store.js';
import type { PullProgress } from '../image-store.js';
import { FakeRegistry } from './fake-registry.js';
import { pullImage, RegistryPuller } from './pull.js';
import { RegistryClient } from './registry-client.js';

const AMD64 = { os: 'linux', architecture: 'amd64' };
let dir: string;
let content: ContentStore;
let reg: FakeRegistry;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prism-pull-'));
  content = new ContentStore(join(dir, 'content'));
  reg = await FakeRegistry.start({ auth: 'bearer' });
});

afterEach(async () => {
  await reg.close();
  await rm(dir, { recursive: true, force: true });
});

describe('pullImage', () => {
  it('stores manifest, index, config and layers, fetching at most maxConcurrentDownloads at once', async () => {
    const amd = reg.addImage('app', undefined, { layerSizes: [40_000, 50_000, 60_000, 70_000, 80_000] });
    const arm = reg.addImage('app', undefined, { architecture: 'arm64' });
    const index = reg.addIndex('app', 'v1', [
      { image: arm, os: 'linux', architecture: 'arm64' },
      { image: amd, os: 'linux', architecture: 'amd64' },
    ]);
    let active = 0;
    let peak = 0;
    reg.intercept = async (_req, _res, path) => {
      if (path.includes('/blobs/')) {
        peak = Math.max(peak, ++active);
        await new Promise((r) => setTimeout(r, 30));
        active--;
      }
      return false;
    };
    const client = new RegistryClient({ maxConcurrentDownloads: 2 });
    const result = await pullImage(client, content, `${reg.host}/app:v1`, { platform: AMD64 });
    expect(result).toEqual({ manifestDigest: amd.manifestDigest, indexDigest: index.digest, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    expect(peak).toBe(2);
    const want = [index.digest, amd.manifestDigest, amd.config.digest, ...amd.layers.map((l) => l.digest)];
    expect(await content.listDigests()).toEqual(want.sort());
    expect(await readdir(content.tmpDir)).toEqual([]);
  });

  it('reports sane progress: resolving once, then per layer from 0 to its size, cached on a second pull', async () => {
    const img = reg.addImage('app', 'v1', { layerSizes: [1000, 300_000] });
    const client = new RegistryClient();
    const events: PullProgress[] = [];
    await pullImage(client, content, `${reg.host}/app:v1`, { platform: AMD64, ref: 'app:v1', onProgress: (p) => events.push(p) });
    expect(events[0]).toEqual({ ref: 'app:v1', phase: 'resolving' });
    expect(events.filter((e) => e.phase === 'resolving')).toHaveLength(1);
    for (const layer of img.layers) {
      const mine = events.filter((e) => e.layer === layer.digest);
      expect(mine.every((e) => e.phase === 'downloading' && e.total === layer.size && e.ref === 'app:v1' && !e.cached)).toBe(true);
      expect(mine[0]!.current).toBe(0);
      expect(mine.at(-1)!.current).toBe(layer.size);
      const currents = mine.map((e) => e.current!);
      expect(currents).toEqual([...currents].sort((a, b) => a - b));
    }

    const again: PullProgress[] = [];
    await pullImage(client, content, `${reg.host}/app:v1`, { platform: AMD64, onProgress: (p) => again.push(p) });
    expect(again.filter((e) => e.phase === 'downloading')).toEqual(
      img.layers.map((l) => ({ ref: `${reg.host}/app:v1`, phase: 'downloading', layer: l.digest, current: l.size, total: l.size, cached: true })),
    );
  });

  it('reports a slow layer at most about ten times a second', async () => {
    const img = reg.addImage('app', 'v1', { layerSizes: [400_000] });
    const layer = img.layers[0]!;
    reg.intercept = async (_req, res, path) => {
      if (!path.includes('/blobs/sha256:' + layer.digest.slice(7))) return false;
      res.writeHead(200, { 'content-length': layer.size });
      for (let off = 0; off < layer.size; off += 8000) {
        res.write(layer.bytes.subarray(off, off + 8000));
        await new Promise((r) => setTimeout(r, 10));
      }
      res.end();
      return true;
    };
    const events: PullProgress[] = [];
    const started = Date.now();
    await pullImage(new RegistryClient(), content, `${reg.host}/app:v1`, { platform: AMD64, onProgress: (p) => events.push(p) });
    const seconds = (Date.now() - started) / 1000;
    const mine = events.filter((e) => e.layer === layer.digest);
    expect(mine.length).toBeGreaterThan(2);
    expect(mine.length).toBeLessThanOrEqual(Math.ceil(seconds * 10) + 2);
  });

  it('stops on abort and leaves no manifest behind', async () => {
    const img = reg.addImage('app', 'v1', { layerSizes: [100_000, 100_000] });
    reg.intercept = (_req, res, path) => {
      if (!path.includes(img.layers[1]!.digest)) return false;
      res.writeHead(200, { 'content-length': img.layers[1]!.size });
      res.write(img.layers[1]!.bytes.subarray(0, 10));
      return true;
    };
    const ac = new AbortController();
    const pull = pullImage(new RegistryClient(), content, `${reg.host}/app:v1`, { platform: AMD64, signal: ac.signal });
    setTimeout(() => ac.abort(new Error('user cancelled')), 100);
    await expect(pull).rejects.toThrow('user cancelled');
    // Nothing is left once the abort is answered (no waiting: the download stopped and cleaned up first).
    expect(await content.has(img.manifestDigest)).toBe(false);
    expect(await content.has(img.layers[1]!.digest)).toBe(false);
    // No temporary file left (an abort before the first blob never made the directory).
    expect(await readdir(content.tmpDir).catch(() => [])).toEqual([]);
  });

  it('serves as the image store\'s puller', async () => {
    const img = reg.addImage('app', 'v1');
    const puller = new RegistryPuller(new RegistryClient());
    expect(await puller.pull({ name: `${reg.host}/app`, tag: 'v1' }, content, { platform: AMD64 })).toMatchObject({ manifestDigest: img.manifestDigest });
    expect(await content.has(img.manifestDigest)).toBe(true);
  });

  it('fails with the first error when a layer is missing, storing no manifest', async () => {
    const img = reg.addImage('app', 'v1', { layerSizes: [1000, 1000] });
    reg.blobs.delete(img.layers[1]!.digest);
    await expect(pullImage(new RegistryClient(), content, `${reg.host}/app:v1`, { platform: AMD64 })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining(img.layers[1]!.digest),
    });
    expect(await content.has(img.manifestDigest)).toBe(false);
  });
});
