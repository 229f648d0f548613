import { constants } from 'node:fs';
import { copyFile, link, lchown, lstat, lutimes, mkdir, open, readlink, rm, symlink, unlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { bad } from '../oci-types.js';
import { LayerFixups } from './layer-fixup.js';
import { ancestors, findInLowers, layerPath, parentOf } from './layer-paths.js';
import type { TarEntry } from './tar-reader.js';

/** Entries a layer carried that are deliberately not unpacked. */
export interface SkippedEntries {
  /** Character and block devices (runc provides /dev). */
  devices: number;
  fifos: number;
  /** xattrs not applied: trusted.* and system.* names, and any on symlinks or hardlinks into lower layers. */
  xattrs: number;
}

/** What this layer has put at a path so far. 'lowerlink' is a hardlink to a lower layer's inode: never modified. */
type Kind = 'dir' | 'file' | 'lowerlink' | 'symlink' | 'whiteout';

interface Meta {
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
}

interface Symlink extends Meta {
  target: string;
}

const O_NOFOLLOW_READ = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const WRITE_NEW = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * Writes one layer's entries into `dest` in overlayfs' own format. Invariants that keep every write
 * inside `dest`: while entries are written `dest` holds no symlinks at all (the layer's symlinks are
 * created last, after everything else); every parent is checked to be a real directory, created if
 * missing; files are created with O_EXCL after removing whatever was there, so a file that is a
 * hardlink into a lower layer is replaced, never written through.
 */
export class LayerWriter {
  readonly skipped: SkippedEntries = { devices: 0, fifos: 0, xattrs: 0 };
  readonly fixups = new LayerFixups();
  private readonly kinds = new Map<string, Kind>([['', 'dir']]);
  private readonly meta = new Map<string, Meta>();
  private readonly symlinks = new Map<string, Symlink>();

  constructor(
    private readonly dest: string,
    private readonly lowerDirs: string[],
    private readonly asRoot: boolean,
  ) {}

  async add(entry: TarEntry, body: () => AsyncGenerator<Buffer>): Promise<void> {
    const rel = layerPath(entry.path, 'entry');
    const base = posix.basename(rel);
    const parent = parentOf(rel);
    // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs) means nothing to overlayfs, as in Docker.
    if (rel.split('/').some((c) => c.startsWith('.wh..wh.') && c !== '.wh..wh..opq')) return;
    if (parent.split('/').some((c) => c.startsWith('.wh.'))) throw bad(`entry ${rel} lies beneath a whiteout`);
    if (base === '.wh..wh..opq') {
      await this.ensureDir(parent);
      this.fixups.opaque.add(parent);
      return;
    }
    if (base.startsWith('.wh.')) return this.whiteout(parent, base.slice(4));
    if (rel === '' && entry.type !== 'dir') throw bad('the layer root must be a directory');
    switch (entry.type) {
      case 'dir': return this.dir(rel, entry);
      case 'file': return this.file(rel, entry, body);
      case 'hardlink': return this.hardlink(rel, layerPath(entry.linkpath, `hardlink ${rel} target`, { allowAbsolute: true }));
      case 'symlink': return this.symlink(rel, entry);
      case 'fifo': this.skipped.fifos++; return;
      default: this.skipped.devices++;
    }
  }

  private async whiteout(parent: string, name: string): Promise<void> {
    if (name === '' || name === '.' || name === '..') throw bad(`whiteout .wh.${name} in ${parent || '/'} is not a valid name`);
    const rel = parent ? `${parent}/${name}` : name;
    await this.ensureDir(parent);
    await this.clear(rel);
    this.kinds.set(rel, 'whiteout');
    this.fixups.whiteouts.add(rel);
  }

  private async dir(rel: string, e: TarEntry): Promise<void> {
    const abs = join(this.dest, rel);
    if (rel !== '') {
      await this.ensureDir(parentOf(rel));
      if (this.kinds.get(rel) !== 'dir') {
        await this.clear(rel);
        await mkdir(abs, { mode: 0o700 });
      }
      this.kinds.set(rel, 'dir');
    }
    if (this.asRoot) await lchown(abs, e.uid, e.gid);
    this.meta.set(rel, { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime });
    this.addXattrs(rel, e);
  }

  private async file(rel: string, e: TarEntry, body: () => AsyncGenerator<Buffer>): Promise<void> {
    await this.ensureDir(parentOf(rel));
    await this.clear(rel);
    const fh = await open(join(this.dest, rel), WRITE_NEW, 0o600);
    try {
      for await (const chunk of body()) await fh.write(chunk);
      if (this.asRoot) await fh.chown(e.uid, e.gid);
      await fh.utimes(e.mtime, e.mtime);
    } finally {
      await fh.close();
    }
    this.kinds.set(rel, 'file');
    this.meta.set(rel, { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime });
    this.addXattrs(rel, e);
  }

  /** Same-layer targets are linked; lower-layer targets are linked across (layers are read-only) or copied. */
  private async hardlink(rel: string, target: string): Promise<void> {
    if (target === rel) throw bad(`hardlink ${rel} points at itself`);
    const kind = this.kinds.get(target);
    if (kind === 'symlink') {
      await this.ensureDir(parentOf(rel));
      await this.clear(rel);
      this.kinds.set(rel, 'symlink');
      this.symlinks.set(rel, { ...this.symlinks.get(target)! });
      return;
    }
    if (kind === 'file' || kind === 'lowerlink') {
      await this.ensureDir(parentOf(rel));
      await this.clear(rel);
      await link(join(this.dest, target), join(this.dest, rel));
      this.kinds.set(rel, kind);
      // The same inode: its mode must still be applied if a later entry replaces `target`.
      const m = this.meta.get(target);
      if (m) this.meta.set(rel, m);
      return;
    }
    // Not in this layer: found below only if nothing in this layer hides it.
    const hidden = ancestors(target).some((a) => {
      const k = this.kinds.get(a);
      return (k !== undefined && k !== 'dir') || this.fixups.opaque.has(a);
    });
    const hit = kind === undefined && !hidden ? await findInLowers(this.lowerDirs, target) : null;
    if (!hit || hit.st.isDirectory()) throw bad(`hardlink ${rel} points at ${target}, which is not a file in this image`);
    await this.ensureDir(parentOf(rel));
    await this.clear(rel);
    if (hit.st.isSymbolicLink()) {
      const { mode, uid, gid, mtimeMs } = hit.st;
      this.kinds.set(rel, 'symlink');
      this.symlinks.set(rel, { target: await readlink(hit.abs), mode, uid, gid, mtime: mtimeMs / 1000 });
      return;
    }
    const abs = join(this.dest, rel);
    try {
      await link(hit.abs, abs);
      this.kinds.set(rel, 'lowerlink');
    } catch (e) {
      if (!['EXDEV', 'EMLINK', 'EPERM'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
      await copyFile(hit.abs, abs, constants.COPYFILE_EXCL);
      if (this.asRoot) await lchown(abs, hit.st.uid, hit.st.gid);
      await lutimes(abs, hit.st.atime, hit.st.mtime);
      this.kinds.set(rel, 'file');
      this.meta.set(rel, { mode: hit.st.mode & 0o7777, uid: hit.st.uid, gid: hit.st.gid, mtime: hit.st.mtimeMs / 1000 });
    }
  }

  private async symlink(rel: string, e: TarEntry): Promise<void> {
    if (e.linkpath === '' || e.linkpath.includes('\0')) throw bad(`symlink ${rel} has an invalid target`);
    await this.ensureDir(parentOf(rel));
    await this.clear(rel);
    this.kinds.set(rel, 'symlink');
    this.symlinks.set(rel, { target: e.linkpath, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime });
    this.skipped.xattrs += e.xattrs.length;
  }

  private addXattrs(rel: string, e: TarEntry): void {
    // trusted.* would let a layer forge overlayfs' own markers (opaque, redirect, metacopy).
    const ok = e.xattrs.filter(([name]) => name.startsWith('security.') || name.startsWith('user.'));
    this.skipped.xattrs += e.xattrs.length - ok.length;
    if (ok.length) this.fixups.xattrs.set(rel, ok);
    else this.fixups.xattrs.delete(rel);
  }

  /** Empties the slot at `rel` for a new entry: removes what this layer put there (and beneath it). */
  private async clear(rel: string): Promise<void> {
    const kind = this.kinds.get(rel);
    this.forget(rel);
    if (kind === undefined || kind === 'symlink' || kind === 'whiteout') return;
    const abs = join(this.dest, rel);
    if (kind === 'dir') await rm(abs, { recursive: true });
    else await unlink(abs);
  }

  private forget(rel: string): void {
    const under = (p: string): boolean => p === rel || p.startsWith(`${rel}/`);
    for (const map of [this.kinds, this.meta, this.symlinks]) for (const p of map.keys()) if (under(p)) map.delete(p);
    this.fixups.forget(rel);
  }

  /**
   * Makes `rel` a real directory of this layer. A missing one takes its owner, mode and mtime from the
   * lower layers (so the merged view does not change them), else root 0755. A directory this layer
   * whited out becomes a new, opaque one, which is what deleting and recreating it means.
   */
  private async ensureDir(rel: string): Promise<void> {
    const kind = this.kinds.get(rel);
    if (kind === 'dir') return;
    if (kind !== undefined && kind !== 'whiteout') throw bad(`layer writes beneath ${rel}, which it made a ${kind === 'lowerlink' ? 'file' : kind}`);
    await this.ensureDir(parentOf(rel));
    const abs = join(this.dest, rel);
    const existing = await lstat(abs).catch(() => null);
    if (existing) throw bad(`layer path ${rel} is unexpectedly present`);
    const lower = kind === 'whiteout' ? null : await findInLowers(this.lowerDirs, rel);
    const m = lower?.st.isDirectory()
      ? { mode: lower.st.mode & 0o7777, uid: lower.st.uid, gid: lower.st.gid, mtime: lower.st.mtimeMs / 1000 }
      : { mode: 0o755, uid: 0, gid: 0, mtime: Date.now() / 1000 };
    this.forget(rel);
    if (kind === 'whiteout') this.fixups.opaque.add(rel);
    await mkdir(abs, { mode: 0o700 });
    if (this.asRoot) await lchown(abs, m.uid, m.gid);
    this.kinds.set(rel, 'dir');
    this.meta.set(rel, m);
  }

  /** After the fixups: symlinks, then modes (after owners, which clear setuid), then directory times. */
  async finish(): Promise<void> {
    if (!this.meta.has('')) {
      // No entry for the root: keep the lower layers' root as it is (overlayfs shows the topmost one's).
      const lower = await findInLowers(this.lowerDirs, '');
      const st = lower?.st.isDirectory() ? lower.st : null;
      this.meta.set('', st ? { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtimeMs / 1000 } : { mode: 0o755, uid: 0, gid: 0, mtime: Date.now() / 1000 });
      if (this.asRoot && st) await lchown(this.dest, st.uid, st.gid);
    }
    for (const [rel, s] of [...this.symlinks].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const abs = join(this.dest, rel);
      await symlink(s.target, abs);
      if (this.asRoot) await lchown(abs, s.uid, s.gid);
      await lutimes(abs, s.mtime, s.mtime);
    }
    const dirs: Array<[string, number]> = [];
    for (const [rel, m] of this.meta) {
      // Through an O_NOFOLLOW descriptor: a path is never resolved through a symlink here.
      const fh = await open(join(this.dest, rel), O_NOFOLLOW_READ);
      try {
        await fh.chmod(m.mode);
        if (this.kinds.get(rel) === 'dir') dirs.push([rel, m.mtime]);
      } finally {
        await fh.close();
      }
    }
    const depth = (rel: string): number => (rel === '' ? 0 : rel.split('/').length);
    dirs.sort(([a], [b]) => depth(b) - depth(a));
    for (const [rel, mtime] of dirs) await lutimes(join(this.dest, rel), mtime, mtime);
  }
}
