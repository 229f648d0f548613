import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, rename, rm, rmdir, stat, truncate } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PrismError } from '../../core/errors.js';

/**
 * ext4 disk images of an image's root file system, for the microVM runtime. The unpacked layers are
 * stacked read-only with overlayfs and mkfs.ext4 copies the merged view (`-d`), so whiteouts and
 * opaque directories are honoured by overlayfs itself rather than re-implemented here.
 */

const MiB = 1 << 20;
const BLOCK = 4096;

function run(cmd: string, args: string[], timeoutMs = 600_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 4 * MiB }, (err, stdout, stderr) => {
      if (err) reject(new PrismError('INTERNAL', `${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve(stdout);
    });
  });
}

async function isMountPoint(path: string): Promise<boolean> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  // mountinfo escapes space, tab, newline and backslash as octal.
  return text.split('\n').some((l) => l.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))) === path);
}

/** Bytes of data blocks (hardlinks once) and the number of inodes under `root`, not crossing mounts. */
async function usage(root: string): Promise<{ bytes: number; inodes: number }> {
  const seen = new Set<number>();
  let bytes = 0;
  let inodes = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const name of await readdir(dir)) {
      const st = await lstat(join(dir, name));
      if (seen.has(st.ino)) continue;
      seen.add(st.ino);
      inodes++;
      // Symlinks up to 60 bytes live in the inode; everything else takes whole blocks.
      if (!st.isSymbolicLink() || st.size > 60) bytes += Math.max(1, Math.ceil(st.size / BLOCK)) * BLOCK;
      if (st.isDirectory()) await walk(join(dir, name));
    }
  };
  await walk(root);
  return { bytes, inodes };
}

/** mke2fs' default journal size for a file system of `blocks` 4 KiB blocks (ext2fs_default_journal_size). */
function journalBytes(blocks: number): number {
  if (blocks < 32768) return 4 * MiB;
  if (blocks < 256 * 1024) return 16 * MiB;
  if (blocks < 512 * 1024) return 32 * MiB;
  if (blocks < 4096 * 1024) return 64 * MiB;
  return 128 * MiB;
}

export interface SparseExt4Options {
  /** File system label, 1-16 of [A-Za-z0-9_.-]. */
  label: string;
  /**
   * A journal keeps the file system consistent across a crash or a VM killed mid-write: wanted for
   * data that outlives its sandbox (volumes), not for a sandbox's scratch layer.
   */
  journal: boolean;
  /** Mode bits of the root directory (e.g. 0o1777); mkfs leaves it 0755 root. */
  rootMode?: number;
}

/**
 * Creates `image` (which must not exist) as a sparse file of `sizeMb` holding an empty ext4. The
 * options keep it quick for any size (~30-60 ms): lazy inode table init, no discard pass, no blocks
 * reserved for root (sandboxes run as root or not, and either way should get the whole size).
 */
export async function makeSparseExt4(image: string, sizeMb: number, opts: SparseExt4Options): Promise<void> {
  if (!/^[\w.-]{1,16}$/.test(opts.label)) throw new PrismError('INVALID_ARGUMENT', `ext4 label must be 1-16 of [A-Za-z0-9_.-], got ${opts.label}`);
  await (await open(image, 'wx', 0o600)).close();
  await truncate(image, sizeMb * MiB);
  const features = opts.journal ? [] : ['-O', '^has_journal'];
  await run('mkfs.ext4', ['-q', '-F', '-m', '0', ...features, '-E', 'lazy_itable_init=1,nodiscard', '-L', opts.label, image], 30_000);
  // debugfs edits the root inode (<2>) in place: no mount needed to set its mode.
  if (opts.rootMode !== undefined) await run('debugfs', ['-w', '-R', `sif <2> mode 04${(opts.rootMode & 0o7777).toString(8).padStart(4, '0')}`, image], 30_000);
}

export interface Ext4DiskOptions {
  /** Free space beyond the image's own content, in MiB (default 64). */
  extraMb?: number;
  /** File system label (default "prism-root"). */
  label?: string;
}

/**
 * Builds `out` from `layerDirs` (unpacked layers, lowest first). The image appears at `out` by one
 * rename, so a crash never leaves a half-written disk there. Mounts and temps are always removed.
 * Needs root (mount) and mkfs.ext4 1.43+ (-d).
 */
export async function buildExt4Disk(layerDirs: string[], out: string, opts: Ext4DiskOptions = {}): Promise<{ sizeBytes: number }> {
  if (layerDirs.length === 0) throw new PrismError('INVALID_ARGUMENT', 'an ext4 disk needs at least one layer');
  const badPath = layerDirs.find((p) => /[:,\n]/.test(p));
  if (badPath) throw new PrismError('INVALID_ARGUMENT', `layer path not usable in an overlay mount: ${badPath}`);
  const extraMb = opts.extraMb ?? 64;
  if (!Number.isSafeInteger(extraMb) || extraMb < 0) throw new PrismError('INVALID_ARGUMENT', `extraMb must be a whole number >= 0, got ${extraMb}`);
  const label = opts.label ?? 'prism-root';
  if (!/^[\w.-]{1,16}$/.test(label)) throw new PrismError('INVALID_ARGUMENT', `ext4 label must be 1-16 of [A-Za-z0-9_.-], got ${label}`);

  // Beside `out`, so the final rename stays on one file system.
  const tmp = await mkdtemp(join(dirname(out), `.${basename(out)}.tmp-`));
  const mnt = join(tmp, 'mnt');
  const empty = join(tmp, 'empty');
  const img = join(tmp, 'disk.ext4');
  let mounted = false;
  try {
    await mkdir(mnt);
    await mkdir(empty);
    // overlayfs without an upper dir wants two lower dirs at least; an empty one at the bottom changes nothing.
    const lower = [...layerDirs].reverse().concat(empty).join(':');
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${lower}`, mnt]);
    mounted = true;
    const used = await usage(mnt);
    const content = (used.bytes + used.inodes * 256) * 1.2;
    const sizeMb = Math.ceil((content + journalBytes(content / BLOCK)) / MiB) + extraMb + 1;
    // mke2fs picks 1 KiB blocks and a fixed inode ratio for small file systems; neither suits a root disk.
    const inodes = Math.ceil(used.inodes * 1.2) + extraMb * 64 + 1024;
    await run('mkfs.ext4', ['-q', '-F', '-b', String(BLOCK), '-N', String(inodes), '-L', label, '-d', mnt, img, `${sizeMb}M`], 3_600_000);
    await run('umount', [mnt]);
    mounted = false;
    await rename(img, out);
    return { sizeBytes: (await stat(out)).size };
  } finally {
    await cleanup(tmp, mnt, empty, img, mounted);
  }
}

/** Never removes anything recursively: a mount point that would not unmount must not be descended into. */
async function cleanup(tmp: string, mnt: string, empty: string, img: string, mounted: boolean): Promise<void> {
  if (mounted || (await isMountPoint(mnt))) {
    await run('umount', [mnt]).catch(() => run('umount', ['-l', mnt]));
  }
  await rm(img, { force: true });
  for (const dir of [mnt, empty, tmp]) await rmdir(dir).catch(() => undefined);
}

const building = new Map<string, Promise<string>>();

/**
 * `<cacheDir>/<hex>.ext4` for the image `imageDigest`, built once from `layerDirs`; concurrent callers
 * in this process share one build. A failed build leaves nothing behind and is retried by the next call.
 */
export async function ensureExt4Disk(cacheDir: string, imageDigest: string, layerDirs: string[], opts?: Ext4DiskOptions): Promise<string> {
  const m = /^sha256:([0-9a-f]{64})$/.exec(imageDigest);
  if (!m) throw new PrismError('INVALID_ARGUMENT', `not a sha256 digest: ${imageDigest}`);
  const out = join(cacheDir, `${m[1]}.ext4`);
  const pending = building.get(out);
  if (pending) return pending;
  const job = (async () => {
    try {
      await stat(out);
      return out;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    await mkdir(cacheDir, { recursive: true });
    await buildExt4Disk(layerDirs, out, opts);
    return out;
  })();
  building.set(out, job);
  try {
    return await job;
  } finally {
    building.delete(out);
  }
}
