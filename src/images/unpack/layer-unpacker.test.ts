import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayer, type SkippedEntries } from './layer-unpacker.js';
import { getXattr, writeLayer, type Spec } from './test-layers.test-support.js';

const REPO = join(import.meta.dirname, '..', '..', '..');
const HELPER = join(REPO, 'guest', 'init', 'prism-init');
const notRoot = process.getuid?.() !== 0;
if (notRoot) console.log('layer-unpacker tests skipped: they need root (chown, mknod, trusted.* xattrs, overlay mounts)');

let root = '';
const mounts: string[] = [];
let seq = 0;

function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      out.push(relative(dir, p));
      if (lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

async function unpack(specs: Spec[], lowers: string[] = [], compression: 'none' | 'gzip' | 'zstd' = 'none', onSkipped?: (s: SkippedEntries) => void): Promise<string> {
  const { blob, layer } = writeLayer(root, specs, compression);
  const dest = join(root, 'work', `layer-${++seq}`);
  await extractLayer(blob, layer, dest, lowers, { fixupBinary: HELPER, onSkipped });
  return dest;
}

function mountOverlay(layers: string[]): string {
  const mnt = join(root, `mnt-${++seq}`);
  mkdirSync(mnt);
  // The kernel wants two lower dirs at least without an upper one; an empty one at the bottom is neutral.
  const empty = join(root, `empty-${seq}`);
  mkdirSync(empty);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${[...layers].reverse().concat(empty).join(':')}`, mnt]);
  mounts.push(mnt);
  return mnt;
}

describe.skipIf(notRoot)('extractLayer', () => {
  let l1 = '';
  let l2 = '';
  let l3 = '';

  beforeAll(async () => {
    execFileSync('make', ['-s', '-C', join(REPO, 'guest', 'init')]);
    root = mkdtempSync(join(tmpdir(), 'prism-unpack-'));
    mkdirSync(join(root, 'work'));
    mkdirSync(join(root, 'work', 'canary'));
    writeFileSync(join(root, 'work', 'canary', 'keep'), 'canary');
    l1 = await unpack([
      { path: 'bin/', type: 'dir', mode: 0o755 },
      { path: 'bin/busybox', data: 'BUSYBOX', mode: 0o755 },
      { path: 'etc/', type: 'dir', mode: 0o751, mtime: 1_400_000_000 },
      { path: 'etc/keep', data: 'keep' },
      { path: 'etc/gone', data: 'gone' },
      { path: 'olddir/', type: 'dir' },
      { path: 'olddir/a', data: 'a' },
      { path: 'olddir/sub/', type: 'dir' },
      { path: 'olddir/sub/b', data: 'b' },
      { path: 'opq/', type: 'dir' },
      { path: 'opq/x', data: 'x' },
      { path: 'opq/y', data: 'y' },
    ]);
    l2 = await unpack([
      { path: 'etc/.wh.gone' },
      { path: 'etc/added', data: 'added' },
      { path: '.wh.olddir' },
      { path: 'opq/', type: 'dir' },
      { path: 'opq/.wh..wh..opq' },
      { path: 'opq/new', data: 'new' },
    ], [l1], 'gzip');
    l3 = await unpack([
      { path: 'olddir/', type: 'dir' },
      { path: 'olddir/fresh', data: 'fresh' },
      { path: 'etc/l3', data: 'l3' },
    ], [l1, l2]);
  });

  afterAll(() => {
    for (const m of mounts.reverse()) {
      try {
        execFileSync('umount', [m]);
      } catch {
        execFileSync('umount', ['-l', m]);
      }
    }
    // Only after every mount is gone: a recursive rm must never reach into a mounted layer stack.
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('stores whiteouts and opaque dirs in overlayfs format, and the merged stack shows exactly the result', () => {
    const gone = lstatSync(join(l2, 'etc', 'gone'));
    expect(gone.isCharacterDevice() && gone.rdev === 0).toBe(true);
    expect(lstatSync(join(l2, 'olddir')).isCharacterDevice()).toBe(true);
    expect(getXattr(join(l2, 'opq'), 'trusted.overlay.opaque')).toBe(Buffer.from('y').toString('hex'));
    const mnt = mountOverlay([l1, l2, l3]);
    expect(listTree(mnt)).toEqual([
      'bin', 'bin/busybox', 'etc', 'etc/added', 'etc/keep', 'etc/l3', 'olddir', 'olddir/fresh', 'opq', 'opq/new',
    ]);
    expect(readFileSync(join(mnt, 'opq', 'new'), 'utf8')).toBe('new');
    // etc/ was implicit in layer 2 and 3: it keeps layer 1's mode and mtime in the merged view.
    expect(statSync(join(mnt, 'etc')).mode & 0o7777).toBe(0o751);
    expect(statSync(join(mnt, 'etc')).mtimeMs).toBe(1_400_000_000_000);
  });

  it('links hardlinks within the layer and into lower layers, and keeps symlinks, owners, modes, mtimes and xattrs', async () => {
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // v2, effective, cap_net_raw
    const bin = Buffer.from([0, 1, 2, 0xff, 0x0a, 0x3d]);
    let skipped: SkippedEntries | undefined;
    const dest = await unpack([
      { path: 'bin/', type: 'dir', mode: 0o755 },
      { path: 'bin/a', data: 'AAA', mode: 0o750, uid: 1000, gid: 1000, mtime: 1_600_000_000 },
      { path: 'bin/a2', type: 'hardlink', linkpath: 'bin/a' },
      { path: 'bin/ls', type: 'hardlink', linkpath: '/bin/busybox' },
      { path: 'bin/su', data: 'su', mode: 0o4755, uid: 1000, gid: 1000, xattrs: { 'security.capability': cap, 'user.bin': bin } },
      { path: 'tmp/', type: 'dir', mode: 0o1777, mtime: 1_500_000_000 },
      { path: 'tmp/f', data: 'f' },
      { path: 'abs', type: 'symlink', linkpath: '/etc/passwd', uid: 1000, gid: 1000 },
      { path: 'rel', type: 'symlink', linkpath: '../../etc/keep' },
      { path: 'dev/', type: 'dir' },
      { path: 'dev/null', type: 'char' },
      { path: 'dev/fifo', type: 'fifo' },
      { path: 'opq/', type: 'dir', xattrs: { 'trusted.overlay.opaque': 'y' } },
    ], [l1], 'none', (s) => (skipped = s));
    const a = statSync(join(dest, 'bin', 'a'));
    expect(statSync(join(dest, 'bin', 'a2')).ino).toBe(a.ino);
    expect(a.nlink).toBe(2);
    expect([a.mode & 0o7777, a.uid, a.gid, a.mtimeMs]).toEqual([0o750, 1000, 1000, 1_600_000_000_000]);
    const ls = statSync(join(dest, 'bin', 'ls'));
    expect(ls.ino).toBe(statSync(join(l1, 'bin', 'busybox')).ino);
    expect(ls.nlink).toBe(2);
    expect(readFileSync(join(dest, 'bin', 'ls'), 'utf8')).toBe('BUSYBOX');
    const su = statSync(join(dest, 'bin', 'su'));
    expect([su.mode & 0o7777, su.uid, su.gid]).toEqual([0o4755, 1000, 1000]);
    expect(getXattr(join(dest, 'bin', 'su'), 'security.capability')).toBe(cap.toString('hex'));
    expect(getXattr(join(dest, 'bin', 'su'), 'user.bin')).toBe(bin.toString('hex'));
    const tmp = statSync(join(dest, 'tmp'));
    expect([tmp.mode & 0o7777, tmp.mtimeMs]).toEqual([0o1777, 1_500_000_000_000]);
    expect(readlinkSync(join(dest, 'abs'))).toBe('/etc/passwd');
    expect(lstatSync(join(dest, 'abs')).uid).toBe(1000);
    expect(readlinkSync(join(dest, 'rel'))).toBe('../../etc/keep');
    expect(readdirSync(join(dest, 'dev'))).toEqual([]);
    expect(getXattr(join(dest, 'opq'), 'trusted.overlay.opaque')).toBeNull();
    expect(skipped).toEqual({ devices: 1, fifos: 1, xattrs: 1 });
  });

  describe('hostile layers', () => {
    const canary = (): string[] => listTree(join(root, 'work', 'canary')).map((p) => `${p}:${readFileSync(join(root, 'work', 'canary', p), 'utf8')}`);
    const cases: Array<[string, () => Spec[]]> = [
      ['../escape', () => [{ path: '../escape', data: 'x' }]],
      ['a/../../escape', () => [{ path: 'a/../../escape', data: 'x' }]],
      ['a file beneath a symlink to the canary', () => [
        { path: 'evil', type: 'symlink', linkpath: join(root, 'work', 'canary') },
        { path: 'evil/pwned', data: 'x' },
      ]],
      ['a directory beneath a symlink', () => [
        { path: 'evil', type: 'symlink', linkpath: join(root, 'work', 'canary') },
        { path: 'evil/sub/', type: 'dir' },
      ]],
      ['a chain of .. symlinks then a write', () => [
        { path: 'up', type: 'symlink', linkpath: '..' },
        { path: 'up2', type: 'symlink', linkpath: 'up/..' },
        { path: 'up2/escape', data: 'x' },
      ]],
      ['a whiteout beneath a symlink', () => [
        { path: 'evil', type: 'symlink', linkpath: join(root, 'work', 'canary') },
        { path: 'evil/.wh.keep' },
      ]],
      ['a hardlink to ../../etc/passwd', () => [{ path: 'pw', type: 'hardlink', linkpath: '../../etc/passwd' }]],
      ['a hardlink through a symlink', () => [
        { path: 'c', type: 'symlink', linkpath: join(root, 'work', 'canary') },
        { path: 'pw', type: 'hardlink', linkpath: 'c/keep' },
      ]],
      ['a hardlink to a missing file', () => [{ path: 'pw', type: 'hardlink', linkpath: 'etc/passwd' }]],
      ['a hardlink to a whited-out lower file', () => [{ path: 'etc/.wh.keep' }, { path: 'k', type: 'hardlink', linkpath: 'etc/keep' }]],
      ['a hardlink to a directory', () => [{ path: 'e', type: 'hardlink', linkpath: 'etc' }]],
      ['a name with NUL', () => [{ path: 'a\0b', data: 'x' }]],
      ['a whiteout of ..', () => [{ path: 'etc/.wh..' }]],
    ];
    for (const [name, specs] of cases) {
      it(`refuses ${name}`, async () => {
        const before = canary();
        const err = await unpack(specs(), [l1]).catch((e: unknown) => e);
        expect(err).toMatchObject({ code: 'INVALID_ARGUMENT' });
        expect(canary()).toEqual(before);
        expect(existsSync(join(root, 'escape'))).toBe(false);
        expect(existsSync(join(root, 'work', 'escape'))).toBe(false);
        expect(existsSync(join(root, 'work', 'canary', 'pwned'))).toBe(false);
      });
    }

    it('refuses absolute entry names', async () => {
      for (const path of ['/etc/passwd', '/../../escape']) {
        await expect(unpack([{ path, data: 'x' }])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('absolute path') });
      }
      expect(existsSync(join(root, 'escape'))).toBe(false);
    });

    it('replaces a hardlink into a lower layer instead of writing through it', async () => {
      const dest = await unpack([{ path: 'bb', type: 'hardlink', linkpath: 'bin/busybox' }, { path: 'bb', data: 'HIJACK' }], [l1]);
      expect(readFileSync(join(dest, 'bb'), 'utf8')).toBe('HIJACK');
      expect(readFileSync(join(l1, 'bin', 'busybox'), 'utf8')).toBe('BUSYBOX');
    });
  });

  it('refuses a layer whose bytes do not match its diffId', async () => {
    const { blob, layer } = writeLayer(root, [{ path: 'f', data: 'x' }], 'gzip', `sha256:${'0'.repeat(64)}`);
    const err = await extractLayer(blob, layer, join(root, 'work', 'mismatch'), []).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('unpacks zstd layers and reports a corrupt one', async () => {
    const dest = await unpack([{ path: 'z/', type: 'dir' }, { path: 'z/file', data: 'zstd!'.repeat(1000) }], [], 'zstd');
    expect(readFileSync(join(dest, 'z', 'file'), 'utf8')).toBe('zstd!'.repeat(1000));
    const { blob, layer } = writeLayer(root, [{ path: 'f', data: 'y'.repeat(100_000) }], 'zstd');
    const buf = readFileSync(blob);
    writeFileSync(blob, buf.subarray(0, buf.length - 20));
    const err = await extractLayer(blob, layer, join(root, 'work', 'bad-zstd'), []).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((err as Error).message).toMatch(/zstd/);
  });

  it('kills zstd when a refused entry stops the unpack early', async () => {
    const big = Buffer.alloc(32 << 20, 7);
    const err = await unpack([{ path: '../escape', data: 'x' }, { path: 'big', data: big }], [], 'zstd').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT' });
    const children = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
        return stat.includes('(zstd)') && stat.split(') ')[1]!.split(' ')[1] === String(process.pid);
      } catch {
        return false;
      }
    });
    expect(children).toEqual([]);
  });

  it('refuses a layer with whiteouts when no fixup binary is given', async () => {
    const { blob, layer } = writeLayer(root, [{ path: '.wh.x' }]);
    const err = await extractLayer(blob, layer, join(root, 'work', 'no-helper'), []).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION' });
  });
});
