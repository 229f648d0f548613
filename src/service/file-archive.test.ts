import { describe, expect, it } from 'vitest';
import { ByteReader } from '../images/unpack/byte-reader.js';
import { readTar } from '../images/unpack/tar-reader.js';
import { recordsFromTar, safeName, tarFromRecords } from './file-archive.js';
import { encodeRecord, helperError, parseRecords, RecordReader, type FsRecord } from './file-records.js';

async function* chunks(buf: Buffer, size = 7): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

const collect = async (g: AsyncIterable<Buffer>) => {
  const parts: Buffer[] = [];
  for await (const c of g) parts.push(c);
  return Buffer.concat(parts);
};

const rec = (r: Partial<FsRecord> & Pick<FsRecord, 'type' | 'name'>): FsRecord => ({ mode: 0o644, mtimeSec: 1_000_000_000, mtimeNsec: 0, size: 0, link: '', ...r });

describe('archive names', () => {
  it('keeps relative names, drops ./ and trailing slashes, and refuses absolute names and ..', () => {
    expect(safeName('./a/b/')).toBe('a/b');
    expect(safeName('a//./b')).toBe('a/b');
    expect(safeName('./')).toBeUndefined();
    expect(() => safeName('/etc/passwd')).toThrow(/absolute/);
    expect(() => safeName('a/../../b')).toThrow(/'\.\.'/);
    expect(() => safeName('..')).toThrow(/'\.\.'/);
    expect(safeName('a..b/..c')).toBe('a..b/..c');
  });
});

describe('records <-> tar', () => {
  it('writes a tar that the tar reader reads back: long names, links, modes, mtimes and file bytes', async () => {
    const long = `${'d'.repeat(150)}/${'é'.repeat(80)}`;
    const data = Buffer.from('x'.repeat(1000));
    const input = Buffer.concat([
      encodeRecord(rec({ type: 'd', name: 'top', mode: 0o750 })),
      encodeRecord(rec({ type: 'f', name: `top/${long}`, size: data.length, mtimeNsec: 500_000_000 })), data,
      encodeRecord(rec({ type: 'l', name: 'top/link', link: `../${'t'.repeat(120)}`, mode: 0o777 })),
    ]);
    const tar = await collect(tarFromRecords(new RecordReader(chunks(input))));
    expect(tar.length % 512).toBe(0);
    const seen: { path: string; type: string; mode: number; mtime: number; linkpath: string; body: string }[] = [];
    for await (const { entry, body } of readTar(new ByteReader(chunks(tar, 300)))) {
      seen.push({ path: entry.path, type: entry.type, mode: entry.mode, mtime: entry.mtime, linkpath: entry.linkpath, body: (await collect(body())).toString() });
    }
    expect(seen).toEqual([
      { path: 'top/', type: 'dir', mode: 0o750, mtime: 1_000_000_000, linkpath: '', body: '' },
      { path: `top/${long}`, type: 'file', mode: 0o644, mtime: 1_000_000_000.5, linkpath: '', body: data.toString() },
      { path: 'top/link', type: 'symlink', mode: 0o777, mtime: 1_000_000_000, linkpath: `../${'t'.repeat(120)}`, body: '' },
    ]);
    // ...and back into records the helper extracts, ending with the end record.
    const back = await collect(recordsFromTar(chunks(tar, 100)));
    expect(back.subarray(-2).toString()).toBe('E\0');
    const fields = back.subarray(0, -2);
    const reader = new RecordReader(chunks(fields));
    const r1 = await reader.next();
    expect(r1).toMatchObject({ type: 'd', name: 'top', mode: 0o750 });
    const r2 = await reader.next();
    expect(r2).toMatchObject({ type: 'f', name: `top/${long}`, size: 1000, mtimeSec: 1_000_000_000, mtimeNsec: 500_000_000 });
    expect((await collect(reader.bytes(1000))).equals(data)).toBe(true);
    expect(await reader.next()).toMatchObject({ type: 'l', name: 'top/link' });
    expect(await reader.next()).toBeNull();
  });

  it('refuses a tar whose entry climbs out with .. before any of it is sent', async () => {
    const tar = await collect(tarFromRecords(new RecordReader(chunks(encodeRecord(rec({ type: 'f', name: 'x' }))))));
    const evil = Buffer.from(tar);
    evil.write('../../x\0', 0, 'latin1');
    // Recompute the checksum so the reader gets as far as the name.
    evil.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of evil.subarray(0, 512)) sum += b;
    evil.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    await expect(collect(recordsFromTar(chunks(evil)))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining("'..'") });
  });
});

describe('helper output', () => {
  it('parses list records and maps errno names onto stable codes', () => {
    const out = Buffer.concat([encodeRecord(rec({ type: 'f', name: 'a b', size: 3 })), encodeRecord(rec({ type: 'l', name: 'l', link: '/etc' }))]);
    expect(parseRecords(out).map((r) => [r.type, r.name, r.link])).toEqual([['f', 'a b', ''], ['l', 'l', '/etc']]);
    expect(helperError('ENOENT /x/y: No such file or directory\n', 1)).toMatchObject({ code: 'NOT_FOUND', message: '/x/y: No such file or directory' });
    expect(helperError('EISDIR /home: Is a directory\n', 1)).toMatchObject({ code: 'INVALID_ARGUMENT', message: '/home: is a directory' });
    expect(helperError('EACCES /etc/x: Permission denied\n', 1).code).toBe('PERMISSION_DENIED');
    expect(helperError('ENOSPC /big: No space left on device\n', 1).code).toBe('RESOURCE_EXHAUSTED');
    expect(helperError('EFBIG /big: File too large\n', 1).code).toBe('PAYLOAD_TOO_LARGE');
    expect(helperError('ENOTEMPTY /d: Directory not empty\n', 1).code).toBe('FAILED_PRECONDITION');
    expect(helperError('prism: cannot run /.prism/init: No such file or directory\n', 127).code).toBe('FAILED_PRECONDITION');
    expect(helperError('EIO /proc/self/mem: Input/output error\n', 1)).toMatchObject({ code: 'FAILED_PRECONDITION', message: 'cannot do that with /proc/self/mem in this sandbox: Input/output error' });
    expect(helperError('', 137, 'SIGKILL').code).toBe('INTERNAL');
  });
});
