import { statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { VmShape } from './vm-boot.js';
import { QemuVmm } from './qemu-vmm.js';
import { TemplateStore } from './vm-template.js';

describe('TemplateStore', () => {
  let root: string;
  let shape: VmShape;
  let store: TemplateStore;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'prism-tpl-'));
    for (const f of ['vmlinux', 'initramfs.cpio', 'image.ext4']) await writeFile(join(root, f), f);
    shape = {
      files: { kernel: join(root, 'vmlinux'), initramfs: join(root, 'initramfs.cpio'), kernelVersion: '6.1', pvh: true },
      accel: 'tcg', imageDisk: join(root, 'image.ext4'), memoryMb: 256, cpus: 1, cmdline: 'console=ttyS0', writableDiskMb: 256,
    };
    store = new TemplateStore({ dir: join(root, 'templates'), vmm: new QemuVmm(), bootTimeoutMs: 1_000 });
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  /** A template as a build leaves it, recording the current identity of the shape's files. */
  async function place(key: string): Promise<void> {
    const dir = join(root, 'templates', key);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'state'), 'stream');
    const files = [shape.files.kernel, shape.files.initramfs, shape.imageDisk].map((path) => {
      const st = statSync(path);
      return { path, size: st.size, mtimeMs: st.mtimeMs };
    });
    await writeFile(join(dir, 'meta.json'), JSON.stringify({ key, inputs: { files }, stateBytes: 'stream'.length }));
  }

  it('keys a shape by its values and by the identity of its files', async () => {
    const k = await store.key(shape);
    expect(k).toMatch(/^[0-9a-f]{32}$/);
    expect(await store.key({ ...shape })).toBe(k);
    expect(await store.key({ ...shape, memoryMb: 512 })).not.toBe(k);
    expect(await store.key({ ...shape, writableDiskMb: 512 })).not.toBe(k);
    expect(await store.key({ ...shape, cpus: 2 })).not.toBe(k);
    expect(await store.key({ ...shape, imageDisk: shape.files.initramfs })).not.toBe(k);
    await writeFile(shape.imageDisk, 'rebuilt image');
    expect(await store.key(shape)).not.toBe(k);
  });

  it('finds only complete templates', async () => {
    const k = await store.key(shape);
    expect(await store.find(k)).toBeUndefined();
    await place(k);
    expect(await store.find(k)).toBe(join(root, 'templates', k, 'state'));
  });

  it('removes a truncated or unreadable template with a log line instead of restoring it', async () => {
    const warnings: string[] = [];
    const logger = { info: () => undefined, warn: (o: object, msg?: string) => warnings.push(`${msg ?? ''} ${JSON.stringify(o)}`) };
    store = new TemplateStore({ dir: join(root, 'templates'), vmm: new QemuVmm(), bootTimeoutMs: 1_000, logger });
    const k = await store.key(shape);
    await place(k);
    await writeFile(join(root, 'templates', k, 'state'), 'str');
    expect(await store.find(k)).toBeUndefined();
    expect(await readdir(join(root, 'templates'))).toEqual([]);
    await place(k);
    await writeFile(join(root, 'templates', k, 'meta.json'), '{');
    expect(await store.find(k)).toBeUndefined();
    expect(await readdir(join(root, 'templates'))).toEqual([]);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain('corrupt');
  });

  it('prunes templates whose inputs changed or that went unused, and dead builds', async () => {
    const k = await store.key(shape);
    await place(k);
    await place('old');
    const longAgo = new Date(Date.now() - 3_600_000);
    await utimes(join(root, 'templates', 'old', 'meta.json'), longAgo, longAgo);
    await mkdir(join(root, 'templates', '.build-0000'));
    expect(await store.prune(60_000)).toEqual(['old']);
    expect(await readdir(join(root, 'templates'))).toEqual([k]);
    await writeFile(shape.files.kernel, 'a new kernel');
    expect(await store.prune(60_000)).toEqual([k]);
    expect(await readdir(join(root, 'templates'))).toEqual([]);
  });
});
