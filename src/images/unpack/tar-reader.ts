import { bad } from '../oci-types.js';
import type { ByteReader } from './byte-reader.js';

/**
 * A streaming tar reader (ustar, pax, GNU long names). Our own rather than node-tar's parser because
 * node-tar decodes pax values as UTF-8 and cuts them at the first NUL, which destroys binary xattrs
 * such as security.capability; and the unpacker wants plain entries, not a writer with its own
 * opinions about paths. Entry names are returned exactly as stored; the unpacker decides what is safe.
 */

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarEntry {
  path: string;
  linkpath: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch (pax mtimes may be fractional). */
  mtime: number;
  size: number;
  /** From SCHILY.xattr.* pax records, values as raw bytes. */
  xattrs: Array<[string, Buffer]>;
}

const BLOCK = 512;
const MAX_META = 1 << 20;
const TYPES: Record<string, TarEntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};

function utf8(buf: Buffer, what: string): string {
  const s = buf.toString('utf8');
  // Node's fs takes string paths as UTF-8; a name that does not round-trip would land under another name.
  if (!Buffer.from(s, 'utf8').equals(buf)) throw bad(`tar ${what} is not valid UTF-8`);
  return s;
}

function field(h: Buffer, off: number, len: number): Buffer {
  const f = h.subarray(off, off + len);
  const nul = f.indexOf(0);
  return nul < 0 ? f : f.subarray(0, nul);
}

function num(h: Buffer, off: number, len: number, what: string): number {
  const f = h.subarray(off, off + len);
  if (f[0]! & 0x80) {
    // GNU base-256: big-endian two's complement; negative values are never valid here.
    if (f[0]! & 0x40) throw bad(`tar header has a negative ${what}`);
    let v = f[0]! & 0x3f;
    for (const b of f.subarray(1)) v = v * 256 + b;
    if (!Number.isSafeInteger(v)) throw bad(`tar header ${what} is out of range`);
    return v;
  }
  const s = f.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw bad(`tar header has a malformed ${what}`);
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const want = num(h, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return want === unsigned || want === signed;
}

/** pax records: "LEN key=value\n", on raw bytes so values may hold anything. */
function parsePax(body: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < body.length) {
    const sp = body.indexOf(0x20, pos);
    const len = sp < 0 ? NaN : Number(body.subarray(pos, sp).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= sp - pos || pos + len > body.length || body[pos + len - 1] !== 0x0a) {
      throw bad('tar has a malformed pax header');
    }
    const rec = body.subarray(sp + 1, pos + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw bad('tar has a malformed pax record');
    out.set(utf8(rec.subarray(0, eq), 'pax key'), rec.subarray(eq + 1));
    pos += len;
  }
  return out;
}

function paxNumber(v: Buffer, key: string): number {
  const s = v.toString('latin1');
  if (!/^\d+(\.\d+)?$/.test(s)) throw bad(`tar pax ${key} is malformed`);
  return Number(s);
}

/**
 * Yields each entry; the caller reads its body through `body(entry)` (at most once) before asking for
 * the next, and whatever it leaves unread is skipped. Ends at the end-of-archive marker or input end.
 */
export async function* readTar(r: ByteReader): AsyncGenerator<{ entry: TarEntry; body: () => AsyncGenerator<Buffer> }> {
  let pax = new Map<string, Buffer>();
  let longName: Buffer | undefined;
  let longLink: Buffer | undefined;
  for (;;) {
    const h = await r.read(BLOCK);
    if (h === null || h.every((b) => b === 0)) return;
    if (!checksumOk(h)) throw bad('tar header checksum mismatch (not a tar, or corrupt)');
    const flag = String.fromCharCode(h[156]!);
    const size = pax.has('size') ? paxNumber(pax.get('size')!, 'size') : num(h, 124, 12, 'size');
    const padding = (BLOCK - (size % BLOCK)) % BLOCK;
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > MAX_META) throw bad(`tar metadata entry of ${size} bytes is too large`);
      const block = size ? await r.read(size + padding) : Buffer.alloc(0);
      if (block === null) throw bad('tar stream is truncated');
      const body = block.subarray(0, size);
      // Global pax headers are ignored, as Docker does.
      if (flag === 'x') pax = parsePax(body);
      else if (flag === 'L') longName = field(body, 0, body.length);
      else if (flag === 'K') longLink = field(body, 0, body.length);
      continue;
    }
    let type = TYPES[flag];
    if (!type) throw bad(`tar entry type ${JSON.stringify(flag)} is not supported`);
    if ([...pax.keys()].some((k) => k.startsWith('GNU.sparse'))) throw bad('sparse tar entries are not supported');
    const ustar = h.subarray(257, 262).toString('latin1') === 'ustar';
    const prefix = ustar ? field(h, 345, 155) : Buffer.alloc(0);
    const rawName = pax.get('path') ?? longName ?? (prefix.length ? Buffer.concat([prefix, Buffer.from('/'), field(h, 0, 100)]) : field(h, 0, 100));
    const path = utf8(rawName, 'entry name');
    // Pre-POSIX archives mark directories only by a trailing slash.
    if (type === 'file' && flag !== '7' && path.endsWith('/')) type = 'dir';
    const entry: TarEntry = {
      path,
      linkpath: utf8(pax.get('linkpath') ?? longLink ?? field(h, 157, 100), 'link name'),
      type,
      mode: num(h, 100, 8, 'mode') & 0o7777,
      uid: pax.has('uid') ? paxNumber(pax.get('uid')!, 'uid') : num(h, 108, 8, 'uid'),
      gid: pax.has('gid') ? paxNumber(pax.get('gid')!, 'gid') : num(h, 116, 8, 'gid'),
      mtime: pax.has('mtime') ? paxNumber(pax.get('mtime')!, 'mtime') : num(h, 136, 12, 'mtime'),
      size: type === 'file' ? size : 0,
      xattrs: [...pax].filter(([k]) => k.startsWith('SCHILY.xattr.')).map(([k, v]) => [k.slice('SCHILY.xattr.'.length), v]),
    };
    pax = new Map();
    longName = longLink = undefined;
    let consumed = 0;
    let taken = false;
    const body = async function* (): AsyncGenerator<Buffer> {
      if (taken) throw new Error('tar entry body read twice');
      taken = true;
      for await (const c of r.chunks(entry.size)) {
        consumed += c.length;
        yield c;
      }
    };
    yield { entry, body };
    // Hardlinks and others may still carry a size; their data is skipped like unread file data.
    await r.skip(size - consumed + padding);
  }
}
