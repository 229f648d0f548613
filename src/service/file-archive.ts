import { posix } from 'node:path';
import { PrismError } from '../core/errors.js';
import { ByteReader } from '../images/unpack/byte-reader.js';
import { readTar, type TarEntry } from '../images/unpack/tar-reader.js';
import { encodeRecord, END_RECORD, type FsRecord, type RecordReader } from './file-records.js';

/**
 * Tar <-> the file helper's record stream. The helper (C, inside the task) only walks and creates
 * files; the tar format, its pax extensions and the name checks live here, in one place.
 */

const BLOCK = 512;
const USTAR_MAX_SIZE = 8 ** 11 - 1;

function octal(buf: Buffer, off: number, len: number, value: number): void {
  buf.write(`${Math.max(0, Math.floor(value)).toString(8).padStart(len - 1, '0')}\0`, off, len, 'latin1');
}

function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  // The length prefix counts itself: grow it until it fits.
  let len = bodyLen + 1;
  while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
  return Buffer.from(`${len}${body}`, 'utf8');
}

function header(name: string, r: { mode: number; size: number; mtime: number; type: string; link: string }): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  octal(h, 100, 8, r.mode & 0o7777);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, r.size > USTAR_MAX_SIZE ? 0 : r.size);
  octal(h, 136, 12, r.mtime);
  h.write(r.type, 156, 1, 'latin1');
  h.write(r.link, 157, 100, 'utf8');
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return h;
}

const pad = (n: number) => Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);

/** ustar headers, preceded by a pax header when a name, link or size does not fit (or is not ASCII). */
export function tarHeader(r: FsRecord): Buffer[] {
  const type = r.type === 'd' ? '5' : r.type === 'l' ? '2' : r.type === 'h' ? '1' : '0';
  const name = r.type === 'd' ? `${r.name}/` : r.name;
  const size = r.type === 'f' ? r.size : 0;
  const fits = (s: string) => Buffer.byteLength(s) < 100 && /^[\x20-\x7e]*$/.test(s);
  const pax: Buffer[] = [];
  if (!fits(name)) pax.push(paxRecord('path', name));
  if (!fits(r.link)) pax.push(paxRecord('linkpath', r.link));
  if (size > USTAR_MAX_SIZE) pax.push(paxRecord('size', String(size)));
  if (r.mtimeNsec) pax.push(paxRecord('mtime', `${r.mtimeSec}.${String(r.mtimeNsec).padStart(9, '0')}`));
  const out: Buffer[] = [];
  const ascii = (s: string) => s.replace(/[^\x20-\x7e]/g, '_').slice(0, 99);
  if (pax.length) {
    const body = Buffer.concat(pax);
    out.push(header(`PaxHeaders/${ascii(posix.basename(name))}`, { mode: 0o644, size: body.length, mtime: r.mtimeSec, type: 'x', link: '' }), body, pad(body.length));
  }
  out.push(header(ascii(name), { mode: r.mode, size, mtime: r.mtimeSec, type, link: ascii(r.link) }));
  return out;
}

/** The helper's archive-out records as a tar stream. */
export async function* tarFromRecords(records: RecordReader): AsyncGenerator<Buffer> {
  for (let r = await records.next(); r; r = await records.next()) {
    if (r.type === 'o') continue;
    yield* tarHeader(r);
    if (r.type === 'f') {
      for await (const c of records.bytes(r.size)) yield c;
      yield pad(r.size);
    }
  }
  yield Buffer.alloc(2 * BLOCK);
}

/**
 * An archive name as a safe relative path: "./" prefixes and trailing slashes dropped; absolute
 * names and any `..` component refused (the whole archive is, at the first such entry). Empty or
 * "." (the archive's own top) -> undefined.
 */
export function safeName(name: string): string | undefined {
  let n = name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
  if (n.startsWith('/')) throw new PrismError('INVALID_ARGUMENT', `archive entry '${name}' has an absolute name; refused`);
  n = n.replace(/\/{2,}/g, '/').replace(/(^|\/)\.(?=\/|$)/g, '').replace(/^\/+|\/+$/g, '');
  if (n === '' || n === '.') return undefined;
  if (n.split('/').includes('..')) throw new PrismError('INVALID_ARGUMENT', `archive entry '${name}' leads out of the target with '..'; refused`);
  return n;
}

function record(e: TarEntry, name: string, link = e.linkpath): FsRecord | undefined {
  const type = e.type === 'file' ? 'f' : e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : e.type === 'hardlink' ? 'h' : undefined;
  if (!type) return undefined; // devices and FIFOs: not file content, and a sandbox user could not make them
  const sec = Math.floor(e.mtime);
  return { type, mode: e.mode, mtimeSec: sec, mtimeNsec: Math.round((e.mtime - sec) * 1e9), size: e.type === 'file' ? e.size : 0, name, link };
}

/** A tar stream as archive-in records, ending with the end record (absent if the tar is cut short). */
export async function* recordsFromTar(tar: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const { entry, body } of readTar(new ByteReader(tar[Symbol.asyncIterator]()))) {
    const name = safeName(entry.path);
    if (name === undefined) continue;
    const link = entry.type === 'hardlink' ? safeName(entry.linkpath) : entry.linkpath;
    if (entry.type === 'hardlink' && link === undefined) throw new PrismError('INVALID_ARGUMENT', `archive entry '${entry.path}' is a hard link to nothing`);
    const r = record(entry, name, link);
    if (!r) continue;
    yield encodeRecord(r);
    if (r.type === 'f') yield* body();
  }
  yield END_RECORD;
}
