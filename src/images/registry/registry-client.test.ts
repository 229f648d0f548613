import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ContentStore, sha256Digest } from '../content/content-store.js';
import { FakeRegistry, type FakeRegistryOptions } from './fake-registry.js';
import { RegistryClient, type RegistryClientOptions } from './registry-client.js';
import { RegistryTransport } from './registry-http.js';

const AMD64 = { os: 'linux', architecture: 'amd64' };
let dir: string;
let content: ContentStore;
const registries: FakeRegistry[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prism-registry-'));
  content = new ContentStore(join(dir, 'content'));
});

afterEach(async () => {
  await Promise.all(registries.splice(0).map((r) => r.close()));
  await rm(dir, { recursive: true, force: true });
});

async function start(opts: FakeRegistryOptions = {}): Promise<FakeRegistry> {
  const reg = await FakeRegistry.start(opts);
  registries.push(reg);
  return reg;
}

function client(opts: RegistryClientOptions = {}): RegistryClient {
  return new RegistryClient({ retryDelayMs: 5, ...opts });
}

/** Nothing half-written: no temp files, and no blob but those expected. */
async function expectClean(expectedBlobs: string[] = []): Promise<void> {
  expect(await readdir(content.tmpDir).catch(() => [])).toEqual([]);
  expect(await content.listDigests()).toEqual([...expectedBlobs].sort());
}

describe('RegistryClient authentication', () => {
  it('follows an anonymous bearer challenge and reuses the token', async () => {
    const reg = await start({ auth: 'bearer' });
    const img = reg.addImage('team/app', 'v1');
    const c = client();
    const r = await c.resolve(`${reg.host}/team/app:v1`, AMD64);
    expect(r).toMatchObject({ manifestDigest: img.manifestDigest, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    expect(r.manifestBytes.equals(img.manifestBytes)).toBe(true);
    await c.fetchBlob(`${reg.host}/team/app:v1`, img.layers[0]!, content);
    await c.resolve(`${reg.host}/team/app:v1`, AMD64);
    expect(reg.count('/token')).toBe(1);
    expect(reg.requests.find((q) => q.path.startsWith('/token'))!.path).toContain('scope=repository%3Ateam%2Fapp%3Apull');
    expect(reg.requests.filter((q) => q.path.startsWith('/v2/')).map((q) => q.authorization?.split(' ')[0] ?? 'none')).toEqual([
      'none',
      'Bearer',
      'Bearer',
      'Bearer',
    ]);
  });

  it('sends configured credentials to the token server', async () => {
    const reg = await start({ auth: 'bearer', anonymous: false, users: { alice: 's3cret' } });
    const img = reg.addImage('private/app', 'v1');
    const c = client({ auths: { [reg.host]: { username: 'alice', password: 's3cret' } } });
    expect((await c.resolve(`${reg.host}/private/app:v1`, AMD64)).manifestDigest).toBe(img.manifestDigest);
    expect(reg.requests.find((q) => q.path.startsWith('/token'))!.authorization).toMatch(/^Basic /);
  });

  it('answers a Basic challenge with configured credentials, then sends them up front', async () => {
    const reg = await start({ auth: 'basic', users: { alice: 's3cret' } });
    const img = reg.addImage('app', 'v1');
    const c = client({ auths: { [reg.host]: { username: 'alice', password: 's3cret' } } });
    await c.resolve(`${reg.host}/app:v1`, AMD64);
    await c.fetchBlob(`${reg.host}/app:v1`, img.config, content);
    expect(reg.requests.map((q) => q.authorization?.split(' ')[0] ?? 'none')).toEqual(['none', 'Basic', 'Basic']);
  });

  it.each([
    ['basic with a wrong password', { auth: 'basic', users: { alice: 's3cret' } }, { alice: 'hunter2-wrong' }],
    ['basic without credentials', { auth: 'basic', users: { alice: 's3cret' } }, undefined],
    ['bearer with a wrong password', { auth: 'bearer', anonymous: false, users: { alice: 's3cret' } }, { alice: 'hunter2-wrong' }],
    ['bearer without credentials', { auth: 'bearer', anonymous: false, users: { alice: 's3cret' } }, undefined],
  ] as const)('refuses %s as UNAUTHENTICATED without revealing the password', async (_name, opts, creds) => {
    const reg = await start(opts as FakeRegistryOptions);
    reg.addImage('app', 'v1');
    const auths = creds ? { [reg.host]: { username: 'alice', password: creds.alice } } : undefined;
    const err = await client(auths ? { auths } : {}).resolve(`${reg.host}/app:v1`, AMD64).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAUTHENTICATED', message: expect.stringContaining(`${reg.host}/app`) });
    expect(JSON.stringify({ m: (err as Error).message, s: (err as Error).stack })).not.toContain('hunter2');
  });

  it('maps 403 to PERMISSION_DENIED and 404 to NOT_FOUND naming the reference', async () => {
    const reg = await start();
    reg.intercept = (req, res) => {
      if (!req.url!.includes('/secret/')) return false;
      res.writeHead(403).end();
      return true;
    };
    await expect(client().resolve(`${reg.host}/secret/app:v1`, AMD64)).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    await expect(client().resolve(`${reg.host}/nosuch:v1`, AMD64)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining(`${reg.host}/nosuch:v1`),
    });
  });
});

describe('RegistryClient.resolve', () => {
  it('chooses a platform from an index, and lists the platforms when none match', async () => {
    const reg = await start();
    const amd = reg.addImage('multi', undefined);
    const arm = reg.addImage('multi', undefined, { architecture: 'arm64' });
    const index = reg.addIndex('multi', 'v1', [
      { image: amd, os: 'linux', architecture: 'amd64' },
      { image: arm, os: 'linux', architecture: 'arm64', variant: 'v8' },
    ]);
    const c = client();
    const chosen = await c.resolve(`${reg.host}/multi:v1`, AMD64);
    expect(chosen).toMatchObject({ manifestDigest: amd.manifestDigest, indexDigest: index.digest });
    expect(chosen.indexBytes!.equals(index.bytes)).toBe(true);
    expect((await c.resolve(`${reg.host}/multi:v1`, { os: 'linux', architecture: 'arm64' })).manifestDigest).toBe(arm.manifestDigest);
    await expect(c.resolve(`${reg.host}/multi:v1`, { os: 'linux', architecture: 'riscv64' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining('available platforms: linux/amd64, linux/arm64/v8'),
    });
  });

  it('verifies digest references against the bytes served', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1');
    const c = client();
    expect((await c.resolve(`${reg.host}/app@${img.manifestDigest}`, AMD64)).manifestDigest).toBe(img.manifestDigest);
    const forged = Buffer.from(img.manifestBytes.toString().replace('"schemaVersion":2', '"schemaVersion":2 '));
    reg.manifests.set(`app@${img.manifestDigest}`, { bytes: forged, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    await expect(c.resolve(`${reg.host}/app@${img.manifestDigest}`, AMD64)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringContaining('does not match its digest'),
    });
  });

  it("refuses a tag's manifest that does not match Docker-Content-Digest", async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1');
    reg.intercept = (_req, res, path) => {
      if (!path.endsWith('/manifests/v1')) return false;
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': sha256Digest('other') });
      res.end(img.manifestBytes);
      return true;
    };
    await expect(client().resolve(`${reg.host}/app:v1`, AMD64)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('Docker-Content-Digest') });
  });

  it('refuses Docker schema 1 manifests as unsupported', async () => {
    const reg = await start();
    reg.putManifest('old', 'v1', { schemaVersion: 1, name: 'old', tag: 'v1', fsLayers: [] }, 'application/vnd.docker.distribution.manifest.v1+prettyjws');
    await expect(client().resolve(`${reg.host}/old:v1`, AMD64)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('unsupported') });
  });

  it('retries a 500 and a 429, then succeeds; gives up as UNAVAILABLE', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1');
    const failures = [500, 429];
    reg.intercept = (_req, res) => {
      const status = failures.shift();
      if (status === undefined) return false;
      res.writeHead(status).end();
      return true;
    };
    expect((await client().resolve(`${reg.host}/app:v1`, AMD64)).manifestDigest).toBe(img.manifestDigest);
    expect(reg.count('/manifests/v1')).toBe(3);
    reg.intercept = (_req, res) => (res.writeHead(503).end(), true);
    await expect(client({ retries: 2 }).resolve(`${reg.host}/app:v1`, AMD64)).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      message: expect.stringContaining('after 3 attempts'),
    });
  });
});

describe('RegistryClient.fetchBlob', () => {
  it('starts no download when the caller aborted while the content store was asked (none left running)', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1', { layerSizes: [200_000] });
    const ac = new AbortController();
    // The abort lands during the store's `has`, between the entry check and the download.
    const asked = Object.create(content) as ContentStore;
    asked.has = async (digest: string) => {
      const r = await content.has(digest);
      ac.abort(new Error('user cancelled'));
      return r;
    };
    await expect(client().fetchBlob(`${reg.host}/app:v1`, img.layers[0]!, asked, undefined, ac.signal)).rejects.toThrow('user cancelled');
    await new Promise((r) => setTimeout(r, 200));
    expect(reg.count('/blobs/')).toBe(0);
    await expectClean();
  });

  it('stores a verified blob, and reports a cached one without asking the registry', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1', { layerSizes: [200_000] });
    const c = client();
    const seen: number[] = [];
    const layer = img.layers[0]!;
    expect(await c.fetchBlob(`${reg.host}/app:v1`, layer, content, (n) => seen.push(n))).toEqual({ digest: layer.digest, size: layer.size, cached: false });
    expect(seen.at(-1)).toBe(layer.size);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
    expect(await c.fetchBlob(`${reg.host}/app:v1`, layer, content)).toMatchObject({ cached: true });
    expect(reg.count('/blobs/')).toBe(1);
    await expectClean([layer.digest]);
  });

  it.each([
    ['different bytes of the same size', (b: Buffer) => Buffer.from(b.map((x) => x ^ 1))],
    ['more bytes than the descriptor', (b: Buffer) => Buffer.concat([b, Buffer.from('x')])],
    ['fewer bytes than the descriptor', (b: Buffer) => b.subarray(1)],
  ])('rejects a blob with %s as corrupted and keeps nothing', async (_name, tamper) => {
    const reg = await start();
    const img = reg.addImage('app', 'v1');
    const layer = img.layers[0]!;
    reg.intercept = (_req, res, path) => {
      if (!path.includes('/blobs/')) return false;
      const bytes = tamper(layer.bytes);
      res.writeHead(200, { 'content-type': 'application/octet-stream' }); // chunked: the size is only known at the end
      res.end(bytes);
      return true;
    };
    await expect(client().fetchBlob(`${reg.host}/app:v1`, layer, content)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      // Said once: an error the download made is not wrapped again when it comes back through the store.
      message: expect.stringMatching(/^corrupted blob: (?!.*corrupted blob)/),
    });
    expect(reg.count('/blobs/')).toBe(1);
    await expectClean();
  });

  it('restarts a download cut off midway, leaving no partial blob', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1', { layerSizes: [300_000] });
    const layer = img.layers[0]!;
    let cut = 0;
    reg.intercept = async (_req, res, path) => {
      if (!path.includes('/blobs/') || cut++ > 0) return false;
      res.writeHead(200, { 'content-length': layer.size });
      res.write(layer.bytes.subarray(0, 100_000));
      await new Promise((r) => setTimeout(r, 20));
      res.destroy();
      return true;
    };
    const sizes: number[] = [];
    await client().fetchBlob(`${reg.host}/app:v1`, layer, content, (n) => sizes.push(n));
    expect(reg.count('/blobs/')).toBe(2);
    expect(sizes.at(-1)).toBe(layer.size);
    expect(sha256Digest(await import('node:fs/promises').then((fs) => fs.readFile(content.path(layer.digest))))).toBe(layer.digest);
    await expectClean([layer.digest]);
  });

  it('times out a stalled download and retries it', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1', { layerSizes: [50_000] });
    const layer = img.layers[0]!;
    let stalled = 0;
    reg.intercept = (_req, res, path) => {
      if (!path.includes('/blobs/') || stalled++ > 0) return false;
      res.writeHead(200, { 'content-length': layer.size });
      res.write(layer.bytes.subarray(0, 10)); // and nothing more
      return true;
    };
    await client({ timeoutMs: 150 }).fetchBlob(`${reg.host}/app:v1`, layer, content);
    expect(reg.count('/blobs/')).toBe(2);
    await expectClean([layer.digest]);
  });

  it('shares one download among concurrent fetches of the same blob', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1', { layerSizes: [500_000] });
    const layer = img.layers[0]!;
    const c1 = client();
    const c2 = client();
    const results = await Promise.all([
      c1.fetchBlob(`${reg.host}/app:v1`, layer, content),
      c1.fetchBlob(`${reg.host}/app:v1`, layer, content),
      c2.fetchBlob(`${reg.host}/app:v1`, layer, content),
    ]);
    expect(results.map((r) => r.digest)).toEqual([layer.digest, layer.digest, layer.digest]);
    expect(reg.count('/blobs/')).toBe(1);
    await expectClean([layer.digest]);
  });

  it('keeps a shared download going when one caller aborts, and stops it when all do', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1', { layerSizes: [100_000] });
    const layer = img.layers[0]!;
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    reg.intercept = async (_req, res, path) => {
      if (!path.includes('/blobs/')) return false;
      res.writeHead(200, { 'content-length': layer.size });
      res.write(layer.bytes.subarray(0, 1000));
      await gate;
      res.end(layer.bytes.subarray(1000));
      return true;
    };
    const c = client();
    const quitter = new AbortController();
    const first = c.fetchBlob(`${reg.host}/app:v1`, layer, content, undefined, quitter.signal);
    const second = c.fetchBlob(`${reg.host}/app:v1`, layer, content);
    await new Promise((r) => setTimeout(r, 50));
    quitter.abort(new Error('changed my mind'));
    await expect(first).rejects.toThrow('changed my mind');
    release();
    await expect(second).resolves.toMatchObject({ digest: layer.digest, cached: false });
    expect(reg.count('/blobs/')).toBe(1);

    const other = reg.addImage('app', 'v2', { layerSizes: [100_000] }).layers[0]!;
    const all = new AbortController();
    reg.intercept = (_req, res, path) => {
      if (!path.includes('/blobs/')) return false;
      res.writeHead(200, { 'content-length': other.size });
      res.write(other.bytes.subarray(0, 1000));
      return true;
    };
    const lone = c.fetchBlob(`${reg.host}/app:v2`, other, content, undefined, all.signal);
    await new Promise((r) => setTimeout(r, 50));
    all.abort(new Error('stop'));
    await expect(lone).rejects.toThrow('stop');
    // The caller is answered at once; the download it alone held ends after, and takes its temp file.
    for (const deadline = Date.now() + 5000; (await readdir(content.tmpDir).catch(() => [])).length > 0 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await expectClean([layer.digest]);
  });

  it('follows a redirect to another origin without sending the registry credentials there', async () => {
    const reg = await start({ auth: 'basic', users: { alice: 's3cret' } });
    const img = reg.addImage('app', 'v1');
    const layer = img.layers[0]!;
    const seenAuth: (string | undefined)[] = [];
    const cdn = createServer((req, res) => {
      seenAuth.push(req.headers.authorization);
      res.end(layer.bytes);
    });
    await new Promise<void>((r) => cdn.listen(0, '127.0.0.1', r));
    try {
      reg.intercept = (req, res, path) => {
        if (!path.includes('/blobs/') || !req.headers.authorization) return false;
        res.writeHead(307, { location: `http://127.0.0.1:${(cdn.address() as AddressInfo).port}/cdn/${layer.digest}` }).end();
        return true;
      };
      const c = client({ auths: { [reg.host]: { username: 'alice', password: 's3cret' } } });
      await c.fetchBlob(`${reg.host}/app:v1`, layer, content);
      expect(seenAuth).toEqual([undefined]);
      await expectClean([layer.digest]);
    } finally {
      cdn.closeAllConnections();
      await new Promise((r) => cdn.close(r));
    }
  });
});

describe('plain HTTP policy', () => {
  it('uses HTTPS except for loopback and hosts listed as insecure', () => {
    const t = new RegistryTransport({ insecure: ['myreg.lan:5000', 'other.lan'], auths: {}, userAgent: 'test' });
    expect(t.baseUrl('registry-1.docker.io').protocol).toBe('https:');
    expect(t.baseUrl('myreg.lan:5000').protocol).toBe('http:');
    expect(t.baseUrl('myreg.lan:5001').protocol).toBe('https:');
    expect(t.baseUrl('other.lan:8080').protocol).toBe('http:');
    for (const host of ['127.0.0.1:5000', '127.1.2.3', 'localhost:5000', '[::1]:5000']) expect(t.baseUrl(host).protocol).toBe('http:');
  });

  it('refuses plain HTTP to a non-loopback host before connecting', async () => {
    const reg = await start();
    const img = reg.addImage('app', 'v1');
    // 192.0.2.0/24 is TEST-NET-1: a connection attempt would hang, not fail fast.
    reg.intercept = (_req, res, path) => {
      if (path.includes('/blobs/')) {
        res.writeHead(302, { location: `http://192.0.2.1/blob` }).end();
        return true;
      }
      res.setHeader('www-authenticate', 'Bearer realm="http://192.0.2.1/token",service="x"');
      res.writeHead(401).end();
      return true;
    };
    const c = client({ timeoutMs: 60_000 });
    const started = Date.now();
    await expect(c.resolve(`${reg.host}/app:v1`, AMD64)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('refusing plain HTTP to 192.0.2.1') });
    await expect(c.fetchBlob(`${reg.host}/app:v1`, img.layers[0]!, content)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(Date.now() - started).toBeLessThan(2000);
    await expectClean();
  });
});
