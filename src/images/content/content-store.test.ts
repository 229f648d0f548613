import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { assertDigest, ContentStore } from './content-store.js';

const digestOf = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('ContentStore', () => {
  let root: string;
  let store: ContentStore;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'prism-cs-'));
    store = new ContentStore(root);
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('stores a buffer at blobs/sha256/<hex> and reads it back', async () => {
    const buf = Buffer.from('{"hello":"world"}');
    const info = await store.putBuffer(buf);
    expect(info).toEqual({ digest: digestOf(buf), size: buf.length });
    expect(store.path(info.digest)).toBe(join(root, 'blobs', 'sha256', info.digest.slice(7)));
    expect(await store.has(info.digest)).toBe(true);
    expect(await store.size(info.digest)).toBe(buf.length);
    expect(await store.readJson(info.digest)).toEqual({ hello: 'world' });
    expect(await store.listDigests()).toEqual([info.digest]);
  });

  it('streams content, verifying the expected digest', async () => {
    const data = Buffer.alloc(3 * 1024 * 1024, 7);
    const info = await store.putStream(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), digestOf(data));
    expect(info.size).toBe(data.length);
    expect((await readFile(store.path(info.digest))).equals(data)).toBe(true);
  });

  it('refuses content that does not match its digest and keeps nothing', async () => {
    const wrong = digestOf('something else');
    await expect(store.putStream(Readable.from([Buffer.from('payload')]), wrong)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(store.putBuffer(Buffer.from('payload'), wrong)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await store.listDigests()).toEqual([]);
    expect(await store.has(wrong)).toBe(false);
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('removes the temp file when the source stream fails', async () => {
    const failing = new Readable({
      read() {
        this.destroy(new Error('disk on fire'));
      },
    });
    await expect(store.putStream(failing)).rejects.toThrow('disk on fire');
    expect(await readdir(join(root, 'tmp'))).toEqual([]);
  });

  it('puts files and is idempotent for the same content', async () => {
    const f = join(root, 'src.bin');
    await writeFile(f, 'file content');
    const a = await store.putFile(f);
    const b = await store.putFile(f, a.digest);
    const c = await store.putBuffer(Buffer.from('file content'));
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    expect(await store.listDigests()).toEqual([a.digest]);
  });

  it('deletes blobs; NOT_FOUND for missing ones', async () => {
    const { digest } = await store.putBuffer(Buffer.from('x'));
    expect(await store.delete(digest)).toBe(true);
    expect(await store.delete(digest)).toBe(false);
    await expect(store.size(digest)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(store.readJson(digest)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('validates digests strictly', () => {
    const hex = 'a'.repeat(64);
    expect(assertDigest(`sha256:${hex}`)).toBe(`sha256:${hex}`);
    for (const bad of [hex, `sha256:${hex.slice(1)}`, `sha256:${'A'.repeat(64)}`, `sha512:${hex}`, `sha256:${hex}\n`, `sha256:../${hex.slice(3)}`]) {
      expect(() => assertDigest(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
    expect(() => store.path('sha256:../../etc/passwd')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('detects a blob corrupted on disk when reading JSON', async () => {
    const { digest } = await store.putBuffer(Buffer.from('{"a":1}'));
    await writeFile(store.path(digest), '{"a":2}');
    await expect(store.readJson(digest)).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('sweeps temps of dead writers but not of live ones', async () => {
    const live = await store.newTemp('blob');
    await writeFile(live, 'in progress');
    const dead = join(store.tmpDir, '999999999-blob-abc');
    await writeFile(dead, 'abandoned');
    await store.removeStaleTemps();
    expect(await readdir(store.tmpDir)).toEqual([live.slice(store.tmpDir.length + 1)]);
  });
});
