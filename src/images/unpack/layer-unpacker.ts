import { createReadStream } from 'node:fs';
import { lchown, lstat, lutimes, mkdir, symlink, unlink, chmod } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Unpack, type ReadEntry } from 'tar';
import { isPrismError, PrismError } from '../../core/errors.js';
import { DigestingStream } from '../content/content-store.js';
import type { ImageLayer } from '../image-store.js';
import { bad, GZIP_LAYER_TYPES } from '../oci-types.js';

interface DeferredLink {
  target: string;
  uid?: number;
  gid?: number;
  mtime?: Date;
}

/** Tar paths (`./a/b`, `/a/b`, `a/b/`) as a clean relative path; '' is the layer root. */
function relPath(p: string): string {
  const n = posix.normalize(`/${p}`).slice(1);
  return n.endsWith('/') ? n.slice(0, -1) : n;
}

/**
 * Extracts one layer into the empty directory `dest`, verifying the uncompressed bytes against diffId.
 * Symlinks are held back and created last: node-tar would rewrite absolute or `..` targets (normal in
 * a root file system) to keep them inside `dest`, and creating them last means no entry of this layer
 * can be written through one. Modes are applied after owners, since chown clears setuid bits and the
 * process umask would otherwise strip bits from new files.
 */
export async function extractLayer(blobPath: string, layer: ImageLayer, dest: string): Promise<void> {
  await mkdir(dest, { mode: 0o755 });
  const asRoot = process.getuid?.() === 0;
  let failure: Error | undefined;
  const src = createReadStream(blobPath);
  const fail = (e: Error): void => {
    failure ??= e;
    src.destroy(failure);
  };
  const { unpack, modes, links } = layerUnpacker(dest, layer, asRoot, fail);
  const finished = new Promise<void>((resolve, reject) => {
    unpack.on('finish', () => resolve());
    unpack.on('error', (e: Error) => reject(e));
  });
  const hasher = new DigestingStream();
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (unpack.write(chunk)) cb();
      else unpack.once('drain', () => cb());
    },
    final(cb) {
      unpack.end();
      cb();
    },
  });
  const stages = GZIP_LAYER_TYPES.has(layer.mediaType) ? [src, createGunzip(), hasher, sink] : [src, hasher, sink];
  try {
    await Promise.all([pipeline(stages as [typeof src, ...Writable[]]), finished]);
  } catch (e) {
    src.destroy();
    if (failure) throw failure;
    if (isPrismError(e)) throw e;
    const errno = (e as NodeJS.ErrnoException).code ?? '';
    if (/^E[A-Z]+$/.test(errno)) throw new PrismError('INTERNAL', `reading layer ${layer.digest}: ${(e as Error).message}`, { cause: e });
    throw bad(`layer ${layer.digest} is not a valid ${layer.mediaType}: ${(e as Error).message}`);
  }
  if (failure) throw failure;
  if (hasher.digest() !== layer.diffId) {
    throw bad(`layer ${layer.digest} does not match its diff_id ${layer.diffId} (got ${hasher.digest()})`);
  }
  await createLinks(dest, links, asRoot);
  for (const [rel, mode] of modes) await chmod(join(dest, rel), mode);
}

/** A node-tar Unpack that refuses whiteouts, holds symlinks back and records modes (see extractLayer). */
function layerUnpacker(dest: string, layer: ImageLayer, asRoot: boolean, fail: (e: Error) => void) {
  const modes = new Map<string, number>();
  const links = new Map<string, DeferredLink>();
  const unpack = new Unpack({
    cwd: dest,
    preserveOwner: asRoot,
    filter: (path: string, entry: unknown) => {
      const e = entry as ReadEntry;
      const rel = relPath(path);
      if (posix.basename(rel).startsWith('.wh.')) {
        fail(bad(`layer ${layer.diffId} contains whiteout ${rel}: whiteouts not supported yet`));
        return false;
      }
      if (e.type === 'SymbolicLink') {
        if (rel === '' || rel.split('/').includes('..')) fail(bad(`layer ${layer.diffId}: symlink path ${path} escapes the layer`));
        links.set(rel, { target: String(e.linkpath), uid: e.uid, gid: e.gid, mtime: e.mtime });
        modes.delete(rel);
        return false;
      }
      links.delete(rel);
      if (e.type === 'Directory' || e.type === 'File' || e.type === 'OldFile' || e.type === 'ContiguousFile') {
        if (typeof e.mode === 'number') modes.set(rel, e.mode & 0o7777);
      }
      return true;
    },
    onwarn: (code: string, message: string | Error, data: unknown) => {
      // Absolute paths made relative, and device nodes/FIFOs (runc provides /dev), are harmless.
      if (code === 'TAR_ENTRY_INFO' || code === 'TAR_ENTRY_UNSUPPORTED') return;
      const errno = (data as { code?: string }).code ?? '';
      const text = message instanceof Error ? message.message : message;
      fail(/^E[A-Z]+$/.test(errno)
        ? new PrismError('INTERNAL', `layer ${layer.diffId}: ${text}`, { cause: message })
        : bad(`layer ${layer.diffId} is not a valid tar: ${code} ${text}`));
    },
  });
  return { unpack, modes, links };
}

async function createLinks(dest: string, links: Map<string, DeferredLink>, asRoot: boolean): Promise<void> {
  const safeDirs = new Set<string>(['']);
  for (const [rel, link] of [...links].sort(([a], [b]) => a.localeCompare(b))) {
    await ensureRealDir(dest, posix.dirname(rel) === '.' ? '' : posix.dirname(rel), safeDirs);
    const abs = join(dest, rel);
    try {
      await symlink(link.target, abs);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      if ((await lstat(abs)).isDirectory()) throw bad(`layer has entries beneath symlink ${rel}`);
      await unlink(abs);
      await symlink(link.target, abs);
    }
    if (asRoot && link.uid !== undefined && link.gid !== undefined) await lchown(abs, link.uid, link.gid);
    if (link.mtime) await lutimes(abs, link.mtime, link.mtime);
  }
}

/** Makes sure every component of `rel` under `dest` is a real directory (never a symlink), creating missing ones. */
async function ensureRealDir(dest: string, rel: string, safe: Set<string>): Promise<void> {
  if (safe.has(rel)) return;
  await ensureRealDir(dest, posix.dirname(rel) === '.' ? '' : posix.dirname(rel), safe);
  const abs = join(dest, rel);
  try {
    const st = await lstat(abs);
    if (!st.isDirectory()) throw bad(`layer places a symlink beneath ${rel}, which is not a directory`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    await mkdir(abs, { mode: 0o755 });
  }
  safe.add(rel);
}
