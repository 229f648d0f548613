import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_IMAGE_ENV, BASE_IMAGE_HOME, BASE_IMAGE_USER, buildBaseImage, DEFAULT_BASE_IMAGE, ensureBaseImage } from './base-image.js';
import { LocalImageStore } from './local-image-store.js';

const DEBROOT = '/tmp/debroot';
const isRoot = process.getuid?.() === 0;
const skipReason = !isRoot
  ? 'needs root (the tree has root-only files and owners must be kept)'
  : !existsSync(join(DEBROOT, 'usr/bin')) ? `no prebuilt debootstrap tree at ${DEBROOT}` : '';
if (skipReason) console.log(`base-image.test: skipping the build from a tree: ${skipReason}`);

describe('base image', () => {
  let work: string;
  let store: LocalImageStore;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'prism-base-test-'));
    store = new LocalImageStore({ root: join(work, 'images') });
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it.skipIf(skipReason !== '')('packages a debootstrap tree into a runnable image with an unprivileged user, without changing the tree', async () => {
    const before = await stat(DEBROOT);
    const devBefore = (await readdir(join(DEBROOT, 'dev'))).sort();
    const buildDir = join(work, 'build');
    const lines: string[] = [];
    let t = Date.now();
    const rec = await buildBaseImage({ store, rootfsDir: DEBROOT, workDir: buildDir, log: (l) => lines.push(l) });
    const buildMs = Date.now() - t;
    t = Date.now();
    const { layerDirs } = await store.rootfs(DEFAULT_BASE_IMAGE);
    const unpackMs = Date.now() - t;
    console.log(JSON.stringify({ buildMs, unpackMs, layerBytes: rec.size, log: lines }));

    expect(rec.refs).toEqual([DEFAULT_BASE_IMAGE]);
    expect(rec.config).toEqual({ env: BASE_IMAGE_ENV, user: BASE_IMAGE_USER, workingDir: BASE_IMAGE_HOME, cmd: ['/bin/sh'] });
    expect(rec.layers).toHaveLength(2);
    expect(layerDirs).toHaveLength(2);
    const dir = layerDirs[0]!;
    // The second layer adds the sandbox user (uid 1000) and its home, owned by it.
    const userDir = layerDirs[1]!;
    expect(await readFile(join(userDir, 'etc/passwd'), 'utf8')).toMatch(/^root:x:0:0:.*\nsandbox:x:1000:1000:[^\n]*:\/home\/sandbox:\/bin\/bash\n$/s);
    expect(await readFile(join(userDir, 'etc/group'), 'utf8')).toContain('\nsandbox:x:1000:\n');
    const home = await stat(join(userDir, 'home/sandbox'));
    expect([home.uid, home.gid, home.mode & 0o777]).toEqual([1000, 1000, 0o755]);
    expect((await stat(join(dir, 'usr/bin/python3'))).isFile()).toBe(true);
    expect(await readlink(join(dir, 'etc/alternatives/awk'))).toBe('/usr/bin/mawk');
    expect(await readlink(join(dir, 'bin'))).toBe('usr/bin');
    expect((await lstat(join(dir, 'usr/bin/passwd'))).mode & 0o7777).toBe(0o4755);
    expect((await lstat(join(dir, 'tmp'))).mode & 0o7777).toBe(0o1777);
    expect(await readdir(join(dir, 'dev'))).toEqual([]);
    expect(await readdir(join(dir, 'var/lib/apt/lists'))).toEqual([]);
    expect((await readdir(join(dir, 'var/cache/apt'))).filter((f) => f.endsWith('.bin'))).toEqual([]);

    // The source tree is only read, and the builder's temp dirs are gone.
    expect((await stat(DEBROOT)).mtimeMs).toBe(before.mtimeMs);
    expect((await readdir(join(DEBROOT, 'dev'))).sort()).toEqual(devBefore);
    expect(await readdir(buildDir)).toEqual([]);

    // Present already: ensureBaseImage must not build (this rootfsDir would fail).
    const again = await ensureBaseImage(store, { rootfsDir: join(work, 'does-not-exist') });
    expect(again.digest).toBe(rec.digest);
  }, 300_000);

  it('cleans up its work dir when building fails', async () => {
    const buildDir = join(work, 'failing');
    await mkdir(buildDir);
    await expect(buildBaseImage({ store, ref: 'prism.local/broken:1', rootfsDir: join(work, 'nope'), workDir: buildDir })).rejects.toThrow();
    expect(await readdir(buildDir)).toEqual([]);
    await expect(store.get('prism.local/broken:1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it.skipIf(!isRoot || !existsSync('/usr/sbin/debootstrap'))('reports an unreachable mirror as UNAVAILABLE and cleans up', async () => {
    const buildDir = join(work, 'offline');
    await expect(
      buildBaseImage({ store, ref: 'prism.local/offline:1', mirror: 'http://127.0.0.1:9/debian', workDir: buildDir }),
    ).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('127.0.0.1:9') });
    expect(await readdir(buildDir)).toEqual([]);
  });
});
