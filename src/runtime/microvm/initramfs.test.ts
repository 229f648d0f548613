import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isPrismError } from '../../core/errors.js';
import { encodeInitramfs, writeInitramfs } from './initramfs.js';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prism-initramfs-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('writeInitramfs', () => {
  it('writes a newc archive that cpio lists and extracts byte for byte', async () => {
    const out = join(dir, 'initramfs.cpio');
    const init = Buffer.from('#!/bin/sh\necho hi\n');
    const ko = Buffer.alloc(4097, 7);
    await writeInitramfs(out, [
      { path: '/init', mode: 0o755, data: init },
      { path: 'lib/modules/virtio.ko', mode: 0o644, data: ko },
      { path: 'modules.order', mode: 0o644, data: Buffer.from('virtio.ko\n') },
      { path: 'dev', mode: 0o755, dir: true },
      { path: 'dev/console', mode: 0o600, charDevice: { major: 5, minor: 1 } },
      { path: 'tmp', mode: 0o1777, dir: true },
      { path: 'newroot', mode: 0o755, dir: true },
    ]);
    expect(await readdir(dir)).toEqual(['initramfs.cpio']);

    const listing = execFileSync('cpio', ['-t', '--quiet'], { input: await readFile(out) }).toString().trim().split('\n');
    expect(listing).toEqual(['init', 'lib', 'lib/modules', 'lib/modules/virtio.ko', 'modules.order', 'dev', 'dev/console', 'tmp', 'newroot']);

    const verbose = execFileSync('cpio', ['-tv', '--quiet'], { input: await readFile(out) }).toString();
    expect(verbose).toMatch(/^crw------- .* 5, +1 .* dev\/console$/m);
    expect(verbose).toMatch(/^drwxrwxrwt .* tmp$/m);
    expect(verbose).toMatch(/^-rwxr-xr-x .* init$/m);

    const x = join(dir, 'x');
    execFileSync('mkdir', [x]);
    // No device nodes when extracting: that needs root and is not what is under test here.
    execFileSync('sh', ['-c', `cpio -id --quiet --no-absolute-filenames init lib/modules/virtio.ko modules.order < ${out}`], { cwd: x });
    expect(await readFile(join(x, 'init'))).toEqual(init);
    expect(await readFile(join(x, 'lib/modules/virtio.ko'))).toEqual(ko);
    expect(await readFile(join(x, 'modules.order'), 'utf8')).toBe('virtio.ko\n');
  });

  it('ends with the TRAILER!!! entry and is deterministic', () => {
    const entries = [{ path: 'init', mode: 0o755, data: Buffer.from('x') }];
    const a = encodeInitramfs(entries);
    expect(a.equals(encodeInitramfs(entries))).toBe(true);
    expect(a.toString('latin1')).toContain('TRAILER!!!\0');
    expect(a.length % 512).toBe(0);
  });

  it('rejects paths that escape or repeat', () => {
    for (const bad of [[{ path: '../etc', mode: 0o644 }], [{ path: '', mode: 0o644 }],
      [{ path: 'a', mode: 0o644 }, { path: 'a', mode: 0o644 }]]) {
      let err: unknown;
      try {
        encodeInitramfs(bad);
      } catch (e) {
        err = e;
      }
      expect(isPrismError(err, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});
