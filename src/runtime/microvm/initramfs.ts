import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PrismError } from '../../core/errors.js';

/** One entry of an initramfs. `path` is relative to the guest's / (a leading slash is ignored). */
export interface InitramfsEntry {
  path: string;
  /** Permission bits (0o755); file-type bits are added from the kind of entry when absent. */
  mode: number;
  data?: Buffer;
  dir?: boolean;
  /** A character device, e.g. /dev/console (5,1): the kernel opens it for init before devtmpfs exists. */
  charDevice?: { major: number; minor: number };
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFCHR = 0o020000;
const TRAILER = 'TRAILER!!!';

/**
 * Writes `entries` as an uncompressed newc ("070701") cpio archive, the format the kernel unpacks
 * as an initramfs (uncompressed boots faster than a compressed one under TCG). Missing parent
 * directories are added (0755) before their first child, since the kernel's unpacker does not
 * create them. Owners are root, mtimes 0, so the same entries give the same bytes.
 * The file appears at `out` complete or not at all (temp file, fsync, rename).
 */
export async function writeInitramfs(out: string, entries: InitramfsEntry[]): Promise<void> {
  const tmp = join(dirname(out), `.${basename(out)}.${process.pid}-${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(encodeInitramfs(entries));
    await fh.sync();
    await fh.close();
    await rename(tmp, out);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
}

/** The archive's bytes; see {@link writeInitramfs}. */
export function encodeInitramfs(entries: InitramfsEntry[]): Buffer {
  const parts: Buffer[] = [];
  const seen = new Set<string>();
  let ino = 1;
  const add = (name: string, mode: number, data: Buffer, rdev = { major: 0, minor: 0 }) => {
    parts.push(header({ ino: ino++, mode, nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1, size: data.length, rdev, name }), data, pad(data.length));
  };
  for (const e of entries) {
    const name = normalize(e.path);
    const missingParents: string[] = [];
    for (let p = dirname(name); p !== '.' && !seen.has(p); p = dirname(p)) missingParents.unshift(p);
    for (const d of missingParents) {
      seen.add(d);
      add(d, S_IFDIR | 0o755, Buffer.alloc(0));
    }
    if (seen.has(name)) {
      if (e.dir) continue;
      throw new PrismError('INVALID_ARGUMENT', `initramfs: ${name} is listed twice`);
    }
    seen.add(name);
    const perm = e.mode & 0o7777;
    const typed = (type: number) => (e.mode & S_IFMT ? e.mode : type | perm);
    if (e.dir) add(name, typed(S_IFDIR), Buffer.alloc(0));
    else if (e.charDevice) add(name, typed(S_IFCHR), Buffer.alloc(0), e.charDevice);
    else add(name, typed(S_IFREG), e.data ?? Buffer.alloc(0));
  }
  parts.push(header({ ino: 0, mode: 0, nlink: 1, size: 0, rdev: { major: 0, minor: 0 }, name: TRAILER }));
  const body = Buffer.concat(parts);
  // Pad to 512 bytes as GNU cpio does; the kernel ignores zeros after the trailer.
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

function normalize(path: string): string {
  const name = path.replace(/^\/+/, '').replace(/\/+$/, '');
  if (!name || name.split('/').some((s) => s === '..' || s === '.' || s === '')) {
    throw new PrismError('INVALID_ARGUMENT', `initramfs: bad path ${JSON.stringify(path)}`);
  }
  return name;
}

function header(h: { ino: number; mode: number; nlink: number; size: number; rdev: { major: number; minor: number }; name: string }): Buffer {
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  const nameBytes = Buffer.from(`${h.name}\0`);
  const fields = [h.ino, h.mode, 0, 0, h.nlink, 0, h.size, 0, 0, h.rdev.major, h.rdev.minor, nameBytes.length, 0];
  const head = Buffer.from(`070701${fields.map(hex).join('')}`, 'ascii');
  // The 110-byte header plus the name is padded to a multiple of 4; so is the data after it.
  return Buffer.concat([head, nameBytes, pad(head.length + nameBytes.length)]);
}

function pad(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}
