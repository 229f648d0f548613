import { lstat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join, posix } from 'node:path';
import { bad } from '../oci-types.js';

/**
 * A tar entry or link name as a clean path relative to the layer root ('' is the root). Absolute entry
 * names are refused: image tools write relative names (`./usr`, `usr`), so an absolute one is a
 * crafted layer, and refusing it is clearer than Docker's silent re-rooting. Hardlink targets are
 * always resolved inside the image, so an absolute one is taken relative to the root, as Docker does.
 * A name that climbs out of the root is refused.
 */
export function layerPath(name: string, what: string, opts: { allowAbsolute?: boolean } = {}): string {
  if (name.includes('\0')) throw bad(`${what} ${JSON.stringify(name)} contains NUL`);
  if (name === '') throw bad(`${what} is empty`);
  if (name.startsWith('/') && !opts.allowAbsolute) throw bad(`${what} ${JSON.stringify(name)} is an absolute path`);
  const n = posix.normalize(name);
  if (n === '..' || n.startsWith('../')) throw bad(`${what} ${JSON.stringify(name)} escapes the layer`);
  const rel = n.replace(/^\/+/, '').replace(/\/+$/, '');
  return rel === '.' ? '' : rel;
}

export function parentOf(rel: string): string {
  const d = posix.dirname(rel);
  return d === '.' ? '' : d;
}

/** `rel` and every directory above it, outermost first, without the root. */
export function ancestors(rel: string): string[] {
  const parts = rel.split('/');
  return parts.map((_, i) => parts.slice(0, i + 1).join('/'));
}

export function isWhiteoutDevice(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

export interface LowerHit {
  abs: string;
  st: Stats;
}

/**
 * Finds `rel` in the merged view of unpacked lower layers (lowest first) the way overlayfs would,
 * except that opaque directories cannot be seen from Node (no getxattr): a hit beneath a directory
 * a higher layer made opaque is still found. That only matters for hostile layers, and the hit is a
 * file of the same image either way. Paths reaching through a symlink, or deleted by a whiteout or by
 * a non-directory in a higher layer, are not found: following a lower symlink would resolve on the host.
 */
export async function findInLowers(lowerDirs: string[], rel: string): Promise<LowerHit | null> {
  const parts = ancestors(rel);
  for (const root of [...lowerDirs].reverse()) {
    let blocked = false;
    let absent = false;
    for (const dir of parts.slice(0, -1)) {
      const st = await lstatOrNull(join(root, dir));
      if (st === null) absent = true;
      else if (!st.isDirectory()) blocked = true;
      if (absent || blocked) break;
    }
    if (blocked) return null;
    if (absent) continue;
    const abs = join(root, rel);
    const st = await lstatOrNull(abs);
    if (st === null) continue;
    return isWhiteoutDevice(st) ? null : { abs, st };
  }
  return null;
}
