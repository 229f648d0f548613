import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayer } from '../unpack/layer-unpacker.js';
import { writeLayer, type Spec } from '../unpack/test-layers.test-support.js';
import { buildExt4Disk, ensureExt4Disk } from './ext4-disk.js';

const REPO = join(import.meta.dirname, '..', '..', '..');
const HELPER = join(REPO, 'guest', 'init', 'prism-init');
const notRoot = process.getuid?.() !== 0;
if (notRoot) console.log('ext4-disk tests skipped: they need root (overlay mounts)');

/** Names in a directory of the image, read with debugfs so the image is never mounted. */
function debugfsLs(img: string, dir: string): string[] {
  const out = execFileSync('debugfs', ['-R', `ls -l ${dir}`, img], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  return out.split('\n').map((l) => l.trim().split(/\s+/).slice(8).join(' ')).filter((n) => n && n !== '.' && n !== '..').sort();
}

function mountsUnder(prefix: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p.startsWith(prefix));
}

describe.skipIf(notRoot)('ext4 disks', () => {
  let root = '';
  const layers: string[] = [];

  beforeAll(async () => {
    execFileSync('make', ['-s', '-C', join(REPO, 'guest', 'init')]);
    root = mkdtempSync(join(tmpdir(), 'prism-ext4-'));
    const stack: Spec[][] = [
      [
        { path: 'etc/', type: 'dir' }, { path: 'etc/keep', data: 'keep' }, { path: 'etc/gone', data: 'gone' },
        { path: 'olddir/', type: 'dir' }, { path: 'olddir/a', data: 'a' },
        { path: 'opq/', type: 'dir' }, { path: 'opq/x', data: 'x' },
        { path: 'bin/', type: 'dir' }, { path: 'bin/su', data: 'su', mode: 0o4755, uid: 1000, gid: 1000 },
      ],
      [{ path: 'etc/.wh.gone' }, { path: '.wh.olddir' }, { path: 'opq/', type: 'dir' }, { path: 'opq/.wh..wh..opq' }, { path: 'opq/new', data: 'new' }],
      [{ path: 'etc/l3', data: 'l3' }, { path: 'lnk', type: 'symlink', linkpath: '/etc/keep' }],
    ];
    for (const [i, specs] of stack.entries()) {
      const { blob, layer } = writeLayer(root, specs, 'gzip');
      const dest = join(root, `layer-${i}`);
      await extractLayer(blob, layer, dest, [...layers], { fixupBinary: HELPER });
      layers.push(dest);
    }
    mkdirSync(join(root, 'cache'));
  });

  afterAll(() => {
    for (const m of mountsUnder(root).reverse()) execFileSync('umount', ['-l', m]);
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('holds the merged view of the layers: deleted files absent, opaque dirs replaced', async () => {
    const out = join(root, 'disk.ext4');
    const { sizeBytes } = await buildExt4Disk(layers, out, { extraMb: 8, label: 'test-root' });
    expect(sizeBytes).toBe(statSync(out).size);
    expect(debugfsLs(out, '/')).toEqual(['bin', 'etc', 'lnk', 'lost+found', 'opq']);
    expect(debugfsLs(out, '/etc')).toEqual(['keep', 'l3']);
    expect(debugfsLs(out, '/opq')).toEqual(['new']);
    const su = execFileSync('debugfs', ['-R', 'stat /bin/su', out], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
    expect(su).toMatch(/Mode:\s+04755/);
    expect(su).toMatch(/User:\s+1000\s+Group:\s+1000/);
    expect(execFileSync('dumpe2fs', ['-h', out], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()).toMatch(/volume name:\s+test-root/);
    expect(readdirSync(root).filter((n) => n.includes('.tmp-'))).toEqual([]);
    expect(mountsUnder(root)).toEqual([]);
  });

  it('builds each image once for concurrent callers', async () => {
    const digest = `sha256:${'ab'.repeat(32)}`;
    const [a, b] = await Promise.all([ensureExt4Disk(join(root, 'cache'), digest, layers), ensureExt4Disk(join(root, 'cache'), digest, layers)]);
    expect(a).toBe(join(root, 'cache', `${'ab'.repeat(32)}.ext4`));
    expect(b).toBe(a);
    const ino = statSync(a).ino;
    expect(statSync(await ensureExt4Disk(join(root, 'cache'), digest, layers)).ino).toBe(ino);
    expect(readdirSync(join(root, 'cache'))).toEqual([`${'ab'.repeat(32)}.ext4`]);
  });

  it('leaves no mount or temp behind when the build fails', async () => {
    const out = join(root, 'broken.ext4');
    const err = await buildExt4Disk([...layers, join(root, 'missing-layer')], out).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INTERNAL' });
    expect(readdirSync(root).filter((n) => n.startsWith('.broken'))).toEqual([]);
    expect(mountsUnder(root)).toEqual([]);
  });
});
