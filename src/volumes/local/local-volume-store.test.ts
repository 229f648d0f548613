import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { volumeStoreConformanceSuite } from '../../../test/conformance/volume-store-suite.js';
import { LocalVolumeStore } from './local-volume-store.js';

volumeStoreConformanceSuite('local', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'prism-volumes-'));
  return { store: new LocalVolumeStore(join(dir, 'volumes')), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describe('LocalVolumeStore', () => {
  it('sweep removes what an interrupted create left, and only that', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'prism-volumes-'));
    try {
      const root = join(dir, 'volumes');
      const store = new LocalVolumeStore(root);
      await store.create('kept', 16);
      await mkdir(join(root, '.tmp-half-0000'));
      await writeFile(join(root, '.tmp-half-0000', 'volume.ext4'), 'partial');
      expect(await store.list()).toEqual(['kept']);
      await store.sweep();
      expect(await readdir(root)).toEqual(['kept']);
      expect(existsSync(await store.image('kept'))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
