import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalImageStore, MEDIA_TYPES } from './local-image-store.js';

const isRoot = process.getuid?.() === 0;
if (!isRoot) console.log('local-image-store.test: not root, so file owners are not checked');

const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Layout {
  dir: string;
  manifestDigest: string;
  layerDigest: string;
  configDigest: string;
}

/** Packs `stage` into a one-layer OCI image layout at `dir`. */
async function makeLayout(dir: string, stage: string, opts: { gzip?: boolean; diffId?: string } = {}): Promise<Layout> {
  const chunks: Buffer[] = [];
  for await (const c of tar.c({ cwd: stage, portable: false }, ['.'])) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks);
  const gzip = opts.gzip ?? true;
  const layer = gzip ? gzipSync(raw) : raw;
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (b: Buffer): Promise<string> => {
    const d = sha(b);
    await writeFile(join(blobs, d.slice(7)), b);
    return d;
  };
  const layerDigest = await put(layer);
  const config = Buffer.from(JSON.stringify({
    created: '2024-01-02T03:04:05Z',
    os: 'linux',
    architecture: 'amd64',
    config: { Env: ['PATH=/usr/bin:/bin', 'FOO=bar'], WorkingDir: '/work', User: '1000', Cmd: ['/bin/tool'] },
    rootfs: { type: 'layers', diff_ids: [opts.diffId ?? sha(raw)] },
  }));
  const configDigest = await put(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: configDigest, size: config.length },
    layers: [{ mediaType: gzip ? MEDIA_TYPES.ociLayerGzip : MEDIA_TYPES.ociLayer, digest: layerDigest, size: layer.length }],
  }));
  const manifestDigest = await put(manifest);
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: MEDIA_TYPES.ociManifest, digest: manifestDigest, size: manifest.length }],
  }));
  return { dir, manifestDigest, layerDigest, configDigest };
}

/** The test image's files: a uid-1000 0750 file, absolute and relative symlinks, setuid and sticky bits. */
async function fillStage(stage: string, marker = 'hello'): Promise<void> {
  await mkdir(join(stage, 'etc'), { recursive: true });
  await mkdir(join(stage, 'bin'));
  await mkdir(join(stage, 'tmp'));
  await chmod(join(stage, 'tmp'), 0o1777);
  await writeFile(join(stage, 'etc', 'hello.txt'), `${marker}\n`);
  await chmod(join(stage, 'etc', 'hello.txt'), 0o644);
  await writeFile(join(stage, 'bin', 'tool'), '#!/bin/sh\necho tool\n');
  await chmod(join(stage, 'bin', 'tool'), 0o750);
  await writeFile(join(stage, 'bin', 'su'), 'setuid');
  await chmod(join(stage, 'bin', 'su'), 0o4755);
  if (isRoot) await chown(join(stage, 'bin', 'tool'), 1000, 1000);
  await symlink('/etc/hello.txt', join(stage, 'hello-abs'));
  await symlink('hello.txt', join(stage, 'etc', 'hello-rel'));
  await symlink('../../../../etc/passwd', join(stage, 'etc', 'passwd-up'));
}

/** Every entry below `dir` as `path mode uid:gid [-> target]`. */
async function describeTree(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(dir, p));
    const owner = isRoot ? ` ${st.uid}:${st.gid}` : '';
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    if (st.isSymbolicLink()) out.push(`${p} link${owner} -> ${await readlink(join(dir, p))}`);
    else if (st.isDirectory()) out.push(`${p}/ ${mode}${owner}`, ...(await describeTree(dir, p)));
    else out.push(`${p} ${mode}${owner}`);
  }
  return out;
}

describe('LocalImageStore', () => {
  let work: string;
  let root: string;
  let store: LocalImageStore;
  let n = 0;

  const newLayout = async (fill: (stage: string) => Promise<void> = fillStage, opts?: { gzip?: boolean; diffId?: string }): Promise<Layout> => {
    n += 1;
    const stage = join(work, `stage${n}`);
    await mkdir(stage);
    await fill(stage);
    return makeLayout(join(work, `layout${n}`), stage, opts);
  };

  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), 'prism-images-'));
    root = join(work, 'images');
    store = new LocalImageStore({ root });
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('imports an OCI layout and derives the record from manifest and config', async () => {
    const layout = await newLayout();
    const rec = await store.importOciLayout(layout.dir, 'Test/App');
    expect(rec).toMatchObject({
      refs: ['docker.io/test/app:latest'],
      digest: layout.manifestDigest,
      createdAt: '2024-01-02T03:04:05Z',
      os: 'linux',
      architecture: 'amd64',
      config: { env: ['PATH=/usr/bin:/bin', 'FOO=bar'], workingDir: '/work', user: '1000', cmd: ['/bin/tool'] },
      layers: [{ digest: layout.layerDigest, mediaType: MEDIA_TYPES.ociLayerGzip }],
    });
    expect(rec.size).toBe(rec.layers[0]!.size);
    expect(await store.get('docker.io/test/app:latest')).toEqual(rec);
    expect(await store.get(`test/app@${layout.manifestDigest}`)).toEqual(rec);
    expect(await store.list()).toEqual([rec]);
    // A second store on the same root sees the same images.
    expect(await new LocalImageStore({ root }).get('test/app')).toEqual(rec);
    const index = JSON.parse(await readFile(join(root, 'index.json'), 'utf8'));
    expect(index.refs).toEqual({ 'docker.io/test/app:latest': layout.manifestDigest });
  });

  it('unpacks the layer with exactly its files, modes, owners and symlinks', async () => {
    const layout = await newLayout();
    await store.importOciLayout(layout.dir, 'app:1');
    const { layerDirs, image } = await store.rootfs('app:1');
    expect(layerDirs).toEqual([join(root, 'layers', image.layers[0]!.diffId.slice(7))]);
    const o = (uid: number): string => (isRoot ? ` ${uid}:${uid}` : '');
    expect(await describeTree(layerDirs[0]!)).toEqual([
      `bin/ 0755${o(0)}`,
      `bin/su 4755${o(0)}`,
      `bin/tool 0750${o(1000)}`,
      `etc/ 0755${o(0)}`,
      `etc/hello-rel link${o(0)} -> hello.txt`,
      `etc/hello.txt 0644${o(0)}`,
      `etc/passwd-up link${o(0)} -> ../../../../etc/passwd`,
      `hello-abs link${o(0)} -> /etc/hello.txt`,
      `tmp/ 1777${o(0)}`,
    ]);
    expect(await readFile(join(layerDirs[0]!, 'etc', 'hello.txt'), 'utf8')).toBe('hello\n');
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('unpacks each layer once, also under concurrent calls, and accepts uncompressed layers', async () => {
    const layout = await newLayout(fillStage, { gzip: false });
    await store.importOciLayout(layout.dir, 'app:plain');
    const [a, b] = await Promise.all([store.rootfs('app:plain'), store.rootfs('app:plain')]);
    expect(a.layerDirs).toEqual(b.layerDirs);
    await writeFile(join(a.layerDirs[0]!, 'marker'), 'x');
    expect((await store.rootfs('app:plain')).layerDirs).toEqual(a.layerDirs);
    expect(await readdir(a.layerDirs[0]!)).toContain('marker');
    expect(await readdir(join(root, 'layers'))).toHaveLength(1);
  });

  it('refuses a blob whose content does not match its digest, and tags nothing', async () => {
    const layout = await newLayout();
    await writeFile(join(layout.dir, 'blobs', 'sha256', layout.layerDigest.slice(7)), 'tampered');
    await expect(store.importOciLayout(layout.dir, 'bad:1')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(store.get('bad:1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await store.content.has(layout.layerDigest)).toBe(false);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('refuses a layer whose content does not match its diff_id', async () => {
    const layout = await newLayout(fillStage, { diffId: sha('not the layer') });
    await store.importOciLayout(layout.dir, 'bad:diff');
    await expect(store.rootfs('bad:diff')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('diff_id') });
    expect(await readdir(join(root, 'layers'))).toEqual([]);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('turns whiteouts into overlay whiteouts (with prism-init as the fixup helper)', async () => {
    const fixup = new LocalImageStore({ root: join(root, 'fixup'), fixupBinary: join(import.meta.dirname, '..', '..', 'guest', 'init', 'prism-init') });
    const layout = await newLayout(async (stage) => {
      await fillStage(stage);
      await writeFile(join(stage, 'etc', '.wh.removed'), '');
    });
    await fixup.importOciLayout(layout.dir, 'wh:1');
    const { layerDirs } = await fixup.rootfs('wh:1');
    const st = await lstat(join(layerDirs[0]!, 'etc', 'removed'));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe(0);
    expect(await readdir(join(root, 'fixup', 'tmp'))).toEqual([]);
  });

  /** A layout whose only layer is the hand-made tar `raw` (for archives no sane tool would write). */
  const layoutFromRawTar = async (raw: Buffer): Promise<string> => {
    n += 1;
    const dir = join(work, `raw${n}`);
    const blobs = join(dir, 'blobs', 'sha256');
    await mkdir(blobs, { recursive: true });
    const put = async (b: Buffer): Promise<{ digest: string; size: number }> => {
      await writeFile(join(blobs, sha(b).slice(7)), b);
      return { digest: sha(b), size: b.length };
    };
    const layer = await put(gzipSync(raw));
    const config = await put(Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [sha(raw)] } })));
    const manifest = await put(Buffer.from(JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: MEDIA_TYPES.ociConfig, ...config },
      layers: [{ mediaType: MEDIA_TYPES.ociLayerGzip, ...layer }],
    })));
    await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MEDIA_TYPES.ociManifest, ...manifest }] }));
    return dir;
  };

  const tarEntry = (path: string, type: 'SymbolicLink' | 'File', linkpath = '', body = ''): Buffer => {
    const h = new tar.Header({ path, type, linkpath, mode: 0o644, size: body.length, uid: 0, gid: 0, mtime: new Date(0) });
    h.encode();
    const data = Buffer.alloc(Math.ceil(body.length / 512) * 512);
    data.write(body);
    return Buffer.concat([h.block!, data]);
  };

  it('never writes through a symlink the layer itself planted', async () => {
    const outside = join(work, 'outside');
    await mkdir(outside);
    const raw = Buffer.concat([tarEntry('evil', 'SymbolicLink', outside), tarEntry('evil/pwned', 'File', '', 'gotcha'), Buffer.alloc(1024)]);
    await store.importOciLayout(await layoutFromRawTar(raw), 'evil:1');
    await expect(store.rootfs('evil:1')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await readdir(outside)).toEqual([]);
    expect(await readdir(join(root, 'layers'))).toEqual([]);
  });

  it('refuses entries that climb out of the layer with ..', async () => {
    const raw = Buffer.concat([tarEntry('a/../../escaped', 'File', '', 'x'), Buffer.alloc(1024)]);
    await store.importOciLayout(await layoutFromRawTar(raw), 'evil:2');
    await expect(store.rootfs('evil:2')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(existsSync(join(root, 'escaped'))).toBe(false);
    expect(existsSync(join(root, 'layers', 'escaped'))).toBe(false);
    expect(await readdir(join(root, 'layers'))).toEqual([]);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('removes an image and garbage-collects only what no tagged image uses', async () => {
    const a = await newLayout(fillStage);
    const b = await newLayout((s) => fillStage(s, 'other'));
    await store.importOciLayout(a.dir, 'a:1');
    await store.importOciLayout(a.dir, 'a:2');
    await store.importOciLayout(b.dir, 'b:1');
    const dirA = (await store.rootfs('a:1')).layerDirs[0]!;
    const dirB = (await store.rootfs('b:1')).layerDirs[0]!;
    expect((await store.get('a:2')).refs).toEqual(['docker.io/library/a:1', 'docker.io/library/a:2']);

    await store.remove('a:1');
    expect(await store.content.has(a.layerDigest)).toBe(true);
    await store.remove('a:2');
    await expect(store.get('a:2')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    for (const d of [a.manifestDigest, a.configDigest, a.layerDigest]) expect(await store.content.has(d)).toBe(false);
    await expect(lstat(dirA)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await store.content.listDigests()).toEqual([b.configDigest, b.layerDigest, b.manifestDigest].sort());
    expect((await lstat(dirB)).isDirectory()).toBe(true);

    await store.remove('b:1');
    expect(await store.content.listDigests()).toEqual([]);
    expect(await readdir(join(root, 'layers'))).toEqual([]);
    expect(await store.list()).toEqual([]);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('refuses to remove an image in use', async () => {
    const layout = await newLayout();
    await store.importOciLayout(layout.dir, 'busy:1');
    const seen: string[][] = [];
    await expect(store.remove('busy:1', (img) => (seen.push(img.refs), true))).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(seen).toEqual([['docker.io/library/busy:1']]);
    expect((await store.get('busy:1')).digest).toBe(layout.manifestDigest);
    await store.remove('busy:1', () => false);
    await expect(store.get('busy:1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('reports unknown and malformed references', async () => {
    await expect(store.get('nope:1')).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('nope:1') });
    await expect(store.rootfs('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(store.remove('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(store.get('Bad Ref')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(store.importOciLayout(join(work, 'missing'), 'x:1')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('refuses a digest reference that does not match the layout', async () => {
    const layout = await newLayout();
    await expect(store.importOciLayout(layout.dir, `app@${sha('other')}`)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const rec = await store.importOciLayout(layout.dir, `app@${layout.manifestDigest}`);
    expect(rec.refs).toEqual([`docker.io/library/app@${layout.manifestDigest}`]);
  });
});
