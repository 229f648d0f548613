/**
 * The VolumeStore contract (src/volumes/volume-store.ts) as tests. Every VolumeStore implementation
 * runs this suite from its own test file. Needs mkfs.ext4 and debugfs (e2fsprogs); no root: the file
 * system is checked with e2fsprogs tools, not mounted.
 */
import { execFileSync } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PrismError, type ErrorCode } from '../../src/core/errors.js';
import type { VolumeStore } from '../../src/volumes/volume-store.js';

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, `expected a PrismError ${code}`).toBeInstanceOf(PrismError);
  expect((err as PrismError).code).toBe(code);
}

const MiB = 1 << 20;

export function volumeStoreConformanceSuite(name: string, make: () => Promise<{ store: VolumeStore; cleanup: () => Promise<void> }>): void {
  describe(`VolumeStore conformance: ${name}`, () => {
    let store: VolumeStore;
    let cleanup: () => Promise<void>;
    beforeEach(async () => {
      ({ store, cleanup } = await make());
    });
    afterEach(async () => cleanup());

    it('creates an empty ext4 of the asked size, sparse, with a root every user may write to', async () => {
      await store.create('data', 64);
      const image = await store.image('data');
      const st = statSync(image);
      expect(st.size).toBe(64 * MiB);
      expect(st.blocks * 512).toBeLessThan(16 * MiB); // only metadata is written
      const header = execFileSync('dumpe2fs', ['-h', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
      expect(header).toMatch(/Filesystem features:.*has_journal/);
      expect(header).toMatch(/Reserved block count:\s+0\n/);
      const root = execFileSync('debugfs', ['-R', 'stat <2>', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
      expect(root).toMatch(/Mode:\s+01777/);
      expect(await store.list()).toEqual(['data']);
    });

    it('refuses a second volume of the same name, bad names and sizes, and leaves nothing', async () => {
      await store.create('dup', 16);
      await expectCode(store.create('dup', 16), 'ALREADY_EXISTS');
      await expectCode(store.create('Bad_Name', 16), 'INVALID_ARGUMENT');
      await expectCode(store.create('../etc', 16), 'INVALID_ARGUMENT');
      await expectCode(store.create('small', 1), 'INVALID_ARGUMENT');
      await expectCode(store.create('frac', 16.5), 'INVALID_ARGUMENT');
      expect(await store.list()).toEqual(['dup']);
    });

    it('two racing creates of one name: one wins, the other gets ALREADY_EXISTS', async () => {
      const results = await Promise.allSettled([store.create('race', 16), store.create('race', 16)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
      expect((lost.reason as PrismError).code).toBe('ALREADY_EXISTS');
      expect(await store.list()).toEqual(['race']);
    });

    it('check passes a sound volume, repairs a damaged one, and refuses one beyond repair', async () => {
      await store.create('chk', 16);
      await store.check('chk');
      const image = await store.image('chk');
      // Clear the root inode's mode (debugfs edits without mounting): e2fsck repairs that.
      execFileSync('debugfs', ['-w', '-R', 'sif <2> mode 0', image], { stdio: 'ignore' });
      await store.check('chk');
      expect(execFileSync('debugfs', ['-R', 'stat <2>', image], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()).toMatch(/Type: directory/);
      // Every superblock (primary and backups) zeroed: nothing left to repair from.
      writeFileSync(image, Buffer.alloc(16 * MiB));
      await expectCode(store.check('chk'), 'FAILED_PRECONDITION');
      await expectCode(store.check('nope'), 'NOT_FOUND');
    });

    it('image of an unknown volume is NOT_FOUND; remove is idempotent', async () => {
      await expectCode(store.image('nope'), 'NOT_FOUND');
      await store.create('gone', 16);
      await store.remove('gone');
      await store.remove('gone');
      await expectCode(store.image('gone'), 'NOT_FOUND');
      expect(await store.list()).toEqual([]);
    });
  });
}
