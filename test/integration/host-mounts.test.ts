/**
 * Host mounts with system calls (guest/init/host-mount.c through src/runtime/host-mounts.ts): a new
 * image mounted by `prism-init mount-loop`, mounts removed by `prism-init umount`, and what each
 * leaves behind when it fails (no mount, no attached loop device).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isMounted, mountNewExt4Image, mountsUnder, unmountAll } from '../../src/runtime/host-mounts.js';
import { makeSparseExt4 } from '../../src/images/rootfs/ext4-disk.js';
import { REPO_ROOT } from './prismd-harness.js';

const init = join(REPO_ROOT, 'guest/init/prism-init');
const skip = !existsSync(init) ? 'guest/init not built (npm run build)' : process.getuid?.() !== 0 ? 'needs root' : undefined;

/** Loop devices backing `file` (losetup -j). */
function loopsOf(file: string): string {
  return execFileSync('losetup', ['-j', file], { encoding: 'utf8' }).trim();
}

describe.skipIf(skip !== undefined)('host mounts through prism-init', () => {
  const dir = mkdtempSync(join(tmpdir(), 'prism-mounts-'));
  afterAll(async () => {
    await unmountAll(dir).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  it('mounts a new image writable, and unmounts it releasing its loop device', async () => {
    const image = join(dir, 'a.ext4');
    const target = join(dir, 'a');
    mkdirSync(target);
    await makeSparseExt4(image, 64, { label: 't', journal: false });
    await mountNewExt4Image(image, target, init);
    expect(await isMounted(target)).toBe(true);
    expect(loopsOf(image)).toMatch(/^\/dev\/loop\d+:/);
    const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === target)!;
    expect(line.split(' ')[5]).toMatch(/nosuid/);
    expect(line.split(' ')[5]).toMatch(/nodev/);
    writeFileSync(join(target, 'f'), 'x');
    await unmountAll(target, { initBinary: init });
    expect(await isMounted(target)).toBe(false);
    expect(existsSync(join(target, 'f'))).toBe(false);
    expect(loopsOf(image)).toBe('');
  });

  it('a failed mount leaves no loop device attached', async () => {
    const image = join(dir, 'b.ext4');
    await makeSparseExt4(image, 64, { label: 't', journal: false });
    await expect(mountNewExt4Image(image, join(dir, 'no-such-dir'), init)).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/cannot mount/) });
    expect(loopsOf(image)).toBe('');
    // Not a file system: refused by the kernel, nothing attached either.
    const junk = join(dir, 'junk.img');
    writeFileSync(junk, Buffer.alloc(1 << 20));
    mkdirSync(join(dir, 'j'));
    await expect(mountNewExt4Image(junk, join(dir, 'j'), init)).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(loopsOf(junk)).toBe('');
  });

  it('unmounts several prefixes in the order given (an overlay before the disk under it), a busy one lazily', async () => {
    const image = join(dir, 'c.ext4');
    const disk = join(dir, 'c-disk');
    const root = join(dir, 'c-root');
    const lower = join(dir, 'c-lower');
    for (const d of [disk, root, lower]) mkdirSync(d);
    await makeSparseExt4(image, 64, { label: 't', journal: false });
    await mountNewExt4Image(image, disk, init);
    mkdirSync(join(disk, 'upper'));
    mkdirSync(join(disk, 'work'));
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${join(disk, 'upper')},workdir=${join(disk, 'work')}`, root]);
    // A process with its working directory in the overlay keeps it busy.
    const busy = spawn('sleep', ['30'], { cwd: root, stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 100));
      await unmountAll([root, disk], { initBinary: init });
      expect(await mountsUnder(dir)).toEqual([]);
    } finally {
      busy.kill('SIGKILL');
    }
    // The lazily detached overlay let go of the disk once its last user went: the device goes too.
    for (const deadline = Date.now() + 5000; loopsOf(image) !== '' && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
    expect(loopsOf(image)).toBe('');
  });

  it('takes off a path mounted over twice, and a path with a space (escaped in mountinfo)', async () => {
    const odd = join(dir, 'with space');
    mkdirSync(odd);
    execFileSync('mount', ['-t', 'tmpfs', 'one', odd]);
    execFileSync('mount', ['-t', 'tmpfs', 'two', odd]);
    expect((await mountsUnder(odd)).length).toBe(1); // the daemon's view: one point
    await unmountAll(odd, { initBinary: init });
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain('with\\040space');
  });

  it('does nothing where nothing is mounted, and does not take a sibling with the same prefix', async () => {
    await expect(unmountAll(join(dir, 'nothing-here'), { initBinary: init })).resolves.toBeUndefined();
    const sibling = join(dir, 'ab');
    mkdirSync(sibling);
    execFileSync('mount', ['-t', 'tmpfs', 'sib', sibling]);
    try {
      await unmountAll(join(dir, 'a'), { initBinary: init });
      expect(await isMounted(sibling)).toBe(true);
    } finally {
      execFileSync('umount', [sibling]);
    }
  });
});
