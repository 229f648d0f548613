import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushTestImages, TEST_REGISTRY_USER, type TestImages } from '../fixtures/test-images.js';
import { REPO_ROOT, call, integrationSkipReason, startPrismd, type Prismd, authHeaders } from './prismd-harness.js';

const skip = integrationSkipReason() ?? (existsSync('/usr/bin/docker-registry') ? undefined : 'docker-registry is not installed');
if (skip) console.warn(`skipping image integration tests: ${skip}`);

const enc = encodeURIComponent;

describe.skipIf(!!skip)('images from real registries', () => {
  let d: Prismd;
  let t: TestImages;
  let work: string;
  let imagesDir: string;

  async function pull(ref: string, extra: object = {}) {
    return call(d.url, 'POST', '/images', { ref, ...extra });
  }
  async function run(sb: string, command: string) {
    const r = await call(d.url, 'POST', `/sandboxes/${sb}/exec`, { command });
    return r.body as { exitCode: number; stdout: string; stderr: string };
  }

  beforeAll(async () => {
    t = await pushTestImages();
    work = await mkdtemp(join(tmpdir(), 'prism-images-test-'));
    imagesDir = join(work, 'images');
    const auth = join(work, 'auth.json');
    await writeFile(auth, JSON.stringify({ auths: { '127.0.0.1:5001': TEST_REGISTRY_USER } }));
    await chmod(auth, 0o600);
    d = await startPrismd({ imagesDir, extraArgs: ['--registry-auth', auth] });
  });
  afterAll(async () => {
    await d?.dispose();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('pulls a multi-layer image with whiteouts, an opaque dir and a zstd layer, and runs it', async () => {
    const r = await fetch(`${d.url}/api/v1/images`, {
      method: 'POST',
      headers: { ...authHeaders(d.url), 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify({ ref: t.images.layers.ref }),
    });
    const events = (await r.text()).trim().split('\n').map((l) => JSON.parse(l));
    expect(events[0]).toMatchObject({ type: 'progress', phase: 'resolving' });
    expect(events.some((e) => e.phase === 'downloading' && e.layer)).toBe(true);
    expect(events.some((e) => e.phase === 'unpacking')).toBe(true);
    const done = events.at(-1);
    expect(done.type).toBe('done');
    expect(done.image.digest).toBe(t.images.layers.digest);
    expect(done.image.layers).toHaveLength(3);

    const sb = (await call(d.url, 'POST', '/sandboxes', { name: 'layers', image: t.images.layers.ref })).body;
    expect(sb.status).toBe('running');
    expect(sb.workdir).toBe('/data');
    expect((await run(sb.id, 'ls /data | sort')).stdout).toBe('keep.txt\nnew.txt\n');
    expect((await run(sb.id, 'ls /opaque')).stdout).toBe('c\n');
    expect((await run(sb.id, 'test -e /olddir; echo $?')).stdout).toBe('1\n');
    expect((await run(sb.id, 'echo $GREETING; pwd')).stdout).toBe('hello\n/data\n');
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
  });

  it('keeps hardlinks, symlinks, modes and owners', async () => {
    // Not pulled first: creating a sandbox from an absent image pulls it.
    // As root: the image's private dir (750, 1000:1000) must be inspectable, as owners and modes are the point.
    const sb = (await call(d.url, 'POST', '/sandboxes', { name: 'links', image: t.images.links.ref, user: 'root' })).body;
    expect(sb.status, JSON.stringify(sb)).toBe('running');
    const out = (await run(sb.id, 'cd /links; stat -c "%n %i %h" hard-a hard-b; readlink abs-link; readlink rel-link; stat -c "%n %a %u:%g" setuid sticky private private/owned.txt; cat cross-hard')).stdout.split('\n');
    const [a, b] = [out[0]!.split(' '), out[1]!.split(' ')];
    expect(a[1]).toBe(b[1]); // one inode
    expect(a[2]).toBe('2');
    expect(out.slice(2, 4)).toEqual(['/links/target.txt', 'target.txt']);
    expect(out.slice(4, 8)).toEqual(['setuid 4755 0:0', 'sticky 1777 0:0', 'private 750 1000:1000', 'private/owned.txt 640 1000:1000']);
    expect(out[8]).not.toBe('');
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
  });

  it('selects the platform from an image index', async () => {
    const amd = await pull(t.images.multiarch.ref);
    expect(amd.status, JSON.stringify(amd.body)).toBe(200);
    expect(amd.body.architecture).toBe('amd64');
    const sb = (await call(d.url, 'POST', '/sandboxes', { image: t.images.multiarch.ref })).body;
    expect((await run(sb.id, 'cat /arch')).stdout).toBe('amd64\n');
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
    const arm = await pull(t.images.multiarch.ref, { platform: { os: 'linux', architecture: 'arm64' } });
    expect(arm.body.architecture).toBe('arm64');
    const none = await pull(t.images.multiarch.ref, { platform: { os: 'linux', architecture: 's390x' } });
    expect(none.status).toBe(404);
    expect(none.body.error.message).toContain('arm64');
  });

  it('authenticates with basic credentials and with anonymous bearer tokens', async () => {
    const basic = await pull(t.images.layers.basicRef!);
    expect(basic.status, JSON.stringify(basic.body)).toBe(200);
    const token = await pull(t.images.layers.tokenRef!);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(token.body.digest).toBe(basic.body.digest);
    // The same registry without credentials configured refuses.
    const other = await startPrismd({ imagesDir: join(work, 'images-noauth') });
    try {
      const refused = await call(other.url, 'POST', '/images', { ref: t.images.links.basicRef });
      expect(refused.status).toBe(401);
      expect(refused.body.error.code).toBe('UNAUTHENTICATED');
      expect(refused.body.error.message).not.toContain(TEST_REGISTRY_USER.password);
    } finally {
      await other.dispose();
    }
  });

  it('refuses hostile layers and nothing appears outside the store', async () => {
    for (const img of [t.images.evilDotdot, t.images.evilAbs, t.images.evilSymlink, t.images.evilHardlink]) {
      const r = await pull(img.ref);
      expect({ ref: img.ref, status: r.status, code: r.body.error?.code }).toEqual({ ref: img.ref, status: 400, code: 'INVALID_ARGUMENT' });
      expect((await call(d.url, 'GET', `/images/${enc(img.ref)}`)).status).toBe(404);
    }
    for (const p of ['/escape-dotdot', '/escape-abs', join(work, 'escape-dotdot'), join(work, 'escape-abs'), join(imagesDir, 'escape-dotdot'), '/tmp/prism-canary/pwned']) {
      expect(existsSync(p), p).toBe(false);
    }
    // No half-unpacked layer or temp left behind.
    expect(readdirSync(join(imagesDir, 'tmp'))).toEqual([]);
  });

  it('answers an unknown image or tag with 404', async () => {
    for (const ref of ['127.0.0.1:5000/prism-test/no-such-image:1', '127.0.0.1:5000/prism-test/layers:no-such-tag']) {
      const r = await pull(ref);
      expect({ ref, status: r.status, code: r.body.error?.code }).toEqual({ ref, status: 404, code: 'NOT_FOUND' });
      const c = await call(d.url, 'POST', '/sandboxes', { image: ref });
      expect(c.status).toBe(404);
    }
  });

  it('rejects a corrupted blob and tags nothing', async () => {
    const r = await pull(t.images.corrupt.ref);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('INVALID_ARGUMENT');
    expect((await call(d.url, 'GET', `/images/${enc(t.images.corrupt.ref)}`)).status).toBe(404);
    const blob = t.corruptBlob.digest.replace('sha256:', '');
    expect(existsSync(join(imagesDir, 'blobs', 'sha256', blob))).toBe(false);
  });

  it('restarts an interrupted pull cleanly with no half-written image visible', async () => {
    const started = fetch(`${d.url}/api/v1/images`, {
      method: 'POST',
      headers: { ...authHeaders(d.url), 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: JSON.stringify({ ref: t.images.big.ref }),
    }).then((r) => r.text()).catch(() => 'cut');
    // Kill prismd while the 50 MB pull runs.
    await new Promise((r) => setTimeout(r, 150));
    d = await d.restart('SIGKILL');
    await started;
    expect((await call(d.url, 'GET', `/images/${enc(t.images.big.ref)}`)).status).toBe(404);
    const again = await pull(t.images.big.ref);
    expect(again.status).toBe(200);
    expect(again.body.digest).toBe(t.images.big.digest);
    expect(readdirSync(join(imagesDir, 'tmp'))).toEqual([]);
  });

  it('deduplicates concurrent pulls of one image', async () => {
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => pull(t.images.links.tokenRef!)));
    expect(new Set([a!.body.digest, b!.body.digest, c!.body.digest]).size).toBe(1);
    expect([a!.status, b!.status, c!.status]).toEqual([200, 200, 200]);
  });

  it('refuses to remove an image in use, then removes it and collects its blobs', async () => {
    const sb = (await call(d.url, 'POST', '/sandboxes', { image: t.images.links.ref })).body;
    const refused = await call(d.url, 'DELETE', `/images/${enc(t.images.links.ref)}`);
    expect(refused.status).toBe(412);
    expect(refused.body.error.code).toBe('FAILED_PRECONDITION');
    await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
    const before = readdirSync(join(imagesDir, 'blobs', 'sha256')).length;
    for (const ref of [t.images.links.ref, t.images.links.basicRef!, t.images.links.tokenRef!]) {
      await call(d.url, 'DELETE', `/images/${enc(ref)}`);
    }
    expect((await call(d.url, 'GET', `/images/${enc(t.images.links.ref)}`)).status).toBe(404);
    expect(readdirSync(join(imagesDir, 'blobs', 'sha256')).length).toBeLessThan(before);
    const gc = await call(d.url, 'POST', '/images/gc');
    expect(gc.status).toBe(200);
  });

  it('imports docker save and OCI layout archives without a registry', async () => {
    for (const [file, ref] of [[t.archives.dockerArchive, 'imported/docker:1'], [t.archives.ociArchive, 'imported/oci:1']] as const) {
      const r = await fetch(`${d.url}/api/v1/images/import?ref=${enc(ref)}`, {
        method: 'POST',
        headers: { ...authHeaders(d.url), 'content-type': 'application/x-tar' },
        body: await readFile(file),
      });
      const body = (await r.json()) as { images: { refs: string[] }[] };
      expect(r.status, JSON.stringify(body)).toBe(200);
      expect(body.images[0]!.refs).toContain(`docker.io/${ref}`);
      const sb = (await call(d.url, 'POST', '/sandboxes', { image: ref })).body;
      expect(sb.status, JSON.stringify(sb)).toBe('running');
      expect((await run(sb.id, 'ls /data | sort')).stdout).toBe('keep.txt\nnew.txt\n');
      await call(d.url, 'DELETE', `/sandboxes/${sb.id}`);
    }
    const bad = await fetch(`${d.url}/api/v1/images/import`, { method: 'POST', headers: { ...authHeaders(d.url), 'content-type': 'application/x-tar' }, body: 'not a tar' });
    expect(bad.status).toBe(400);
  });

  it('prismctl image pull, ls, inspect, import and rm', () => {
    const ctl = (...args: string[]) => {
      const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismctl.js'), '--api', d.api, ...args], {
        encoding: 'utf8',
        timeout: 60_000,
        env: { ...process.env, PRISM_TOKEN: d.token, PRISM_CONFIG: '/nonexistent/prism-config.json' },
      });
      return { code: r.status, out: r.stdout, err: r.stderr };
    };
    const ref = t.images.multiarch.ref;
    const pulled = ctl('image', 'pull', ref);
    expect(pulled.code, pulled.err).toBe(0);
    expect(pulled.out).toContain(`pulled ${ref}`);
    expect(ctl('image', 'ls').out).toContain('127.0.0.1:5000/prism-test/multiarch:1');
    const inspect = JSON.parse(ctl('-o', 'json', 'image', 'inspect', ref).out);
    expect(inspect.architecture).toBe('amd64');
    const imported = ctl('image', 'import', t.archives.ociArchive, '--ref', 'cli/imported:1');
    expect(imported.code, imported.err).toBe(0);
    expect(imported.out).toContain('docker.io/cli/imported:1');
    expect(ctl('image', 'rm', 'cli/imported:1', ref).code).toBe(0);
    const gone = ctl('image', 'inspect', ref);
    expect(gone.code).toBe(1);
    expect(gone.err).toContain('NOT_FOUND');
  });
});
