import { PrismError, type ErrorCode } from '../core/errors.js';
import type { FileEntry, FileType } from '../core/types.js';
import { ByteReader } from '../images/unpack/byte-reader.js';

/**
 * The wire of `prism-init fs` (guest/init/fs-helper.c): entry records of 7 NUL-terminated fields
 * (type, octal mode, mtime seconds, mtime nanoseconds, size, name, link target), upload frames
 * (u32 big-endian length + bytes, 0 = end), and its "<ERRNAME> message" failures.
 */

export type { FileEntry };

/** A record as the helper writes and reads it. `h` is a hard link to `link` (archives only). */
export interface FsRecord {
  type: 'f' | 'd' | 'l' | 'o' | 'h';
  mode: number;
  mtimeSec: number;
  mtimeNsec: number;
  size: number;
  name: string;
  link: string;
}

const TYPE_NAMES: Record<string, FileType> = { f: 'file', d: 'dir', l: 'symlink' };

export function toEntry(r: FsRecord): FileEntry {
  const e: FileEntry = {
    name: r.name,
    type: TYPE_NAMES[r.type] ?? 'other',
    size: r.type === 'f' ? r.size : 0,
    mode: r.mode,
    mtime: new Date(r.mtimeSec * 1000 + Math.floor(r.mtimeNsec / 1e6)).toISOString(),
  };
  if (r.type === 'l') e.linkTarget = r.link;
  return e;
}

function fromFields(f: string[]): FsRecord {
  const [type, mode, sec, nsec, size, name, link] = f as [string, string, string, string, string, string, string];
  if (!/^[fdloh]$/.test(type)) throw new PrismError('INTERNAL', `file helper sent an unknown record type ${JSON.stringify(type)}`);
  return { type: type as FsRecord['type'], mode: parseInt(mode, 8), mtimeSec: Number(sec), mtimeNsec: Number(nsec), size: Number(size), name, link };
}

/** Every record in a complete output (stat, list). */
export function parseRecords(buf: Buffer): FsRecord[] {
  const fields = buf.toString('utf8').split('\0');
  fields.pop(); // after the last NUL
  if (fields.length % 7 !== 0) throw new PrismError('INTERNAL', 'file helper sent a truncated record');
  const out: FsRecord[] = [];
  for (let i = 0; i < fields.length; i += 7) out.push(fromFields(fields.slice(i, i + 7)));
  return out;
}

export function encodeRecord(r: FsRecord): Buffer {
  const f = [r.type, (r.mode & 0o7777).toString(8), String(Math.floor(r.mtimeSec)), String(r.mtimeNsec), String(r.size), r.name, r.link];
  if (f.some((x) => x.includes('\0'))) throw new PrismError('INVALID_ARGUMENT', `a name holds a NUL byte: ${JSON.stringify(r.name)}`);
  return Buffer.from(`${f.join('\0')}\0`, 'utf8');
}

/** The end of an archive-in stream: without it the helper treats the archive as cut short. */
export const END_RECORD = Buffer.from('E\0');

export function frameHeader(len: number): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(len);
  return h;
}

/** Streams records (and the bytes after each file record) out of the helper's stdout. */
export class RecordReader {
  private readonly reader: ByteReader;

  constructor(source: AsyncIterator<Buffer>) {
    this.reader = new ByteReader(source, (what) =>
      new PrismError('INTERNAL', what === 'oversized' ? 'file helper sent an oversized record' : 'file helper output ended inside a record or file'));
  }

  /** The next record, or null at a clean end. */
  async next(): Promise<FsRecord | null> {
    const fields: string[] = [];
    while (fields.length < 7) {
      const f = await this.reader.until(0, 3 * 4096 + 64);
      if (f === null) {
        if (fields.length === 0) return null;
        throw new PrismError('INTERNAL', 'file helper output ended inside a record');
      }
      fields.push(f.toString('utf8'));
    }
    return fromFields(fields);
  }

  /** Exactly n bytes as they arrive. */
  bytes(n: number): AsyncGenerator<Buffer> {
    return this.reader.chunks(n);
  }
}

const CODES: Record<string, ErrorCode> = {
  ENOENT: 'NOT_FOUND',
  ENOTDIR: 'INVALID_ARGUMENT',
  EISDIR: 'INVALID_ARGUMENT',
  EINVAL: 'INVALID_ARGUMENT',
  ELOOP: 'INVALID_ARGUMENT',
  ENAMETOOLONG: 'INVALID_ARGUMENT',
  EXDEV: 'INVALID_ARGUMENT',
  EPIPE: 'INVALID_ARGUMENT',
  EACCES: 'PERMISSION_DENIED',
  EPERM: 'PERMISSION_DENIED',
  EROFS: 'PERMISSION_DENIED',
  ETXTBSY: 'PERMISSION_DENIED',
  ENOSPC: 'RESOURCE_EXHAUSTED',
  EDQUOT: 'RESOURCE_EXHAUSTED',
  EFBIG: 'PAYLOAD_TOO_LARGE',
  EEXIST: 'ALREADY_EXISTS',
  ENOTEMPTY: 'FAILED_PRECONDITION',
  EBUSY: 'FAILED_PRECONDITION',
};

/** Readable words for the errors users meet most, in place of strerror's. */
const HINTS: Record<string, string> = {
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
  EINVAL: 'not a regular file or not a valid name',
  ELOOP: 'refused: a symbolic link in an archive path, or too many levels of links',
  EXDEV: 'cannot move across filesystems',
  EFBIG: 'larger than the daemon allows (--max-file-mb)',
  ENOTEMPTY: 'directory not empty (remove with recursive)',
  ENOSPC: 'no space left in the sandbox',
};

/** The PrismError for a helper that failed: its "<ERRNAME> what: strerror" line mapped to a code. */
export function helperError(stderr: string, exitCode: number, signal?: string): PrismError {
  const line = stderr.trim().split('\n').pop() ?? '';
  const m = /^(E[A-Z]+) (.*?)(?:: [^:]*)?$/.exec(line);
  if (m && CODES[m[1]!]) {
    const what = m[2]!;
    const hint = HINTS[m[1]!];
    const message = hint ? `${what}: ${hint}` : line.slice(m[1]!.length + 1);
    return new PrismError(CODES[m[1]!]!, message);
  }
  // Any other errno came from the sandbox's own filesystem (EIO reading /proc/self/mem, ENXIO on a
  // socket, EOPNOTSUPP...): a property of what the path names there, not a daemon fault.
  if (m) return new PrismError('FAILED_PRECONDITION', `cannot do that with ${m[2]!} in this sandbox: ${line.slice(line.lastIndexOf(': ') + 2) || m[1]}`);
  // No helper at /.prism/init: a microVM booted from an initramfs built before it had prism-init.
  if (exitCode === 127 || /cannot run/.test(stderr)) {
    return new PrismError(
      'FAILED_PRECONDITION',
      "this sandbox has no file helper at /.prism/init; for microvm, rebuild the guest initramfs (scripts/prepare-guest.sh) and restart the sandbox",
    );
  }
  return new PrismError('INTERNAL', `file operation failed (exit ${exitCode}${signal ? `, ${signal}` : ''}): ${line || 'no message'}`);
}
