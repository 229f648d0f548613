import { describe, expect, it } from 'vitest';
import { StreamEncoder, encodeOutput, incompleteTail, isUtf8, type OutputEncoding } from './output-encoding.js';

// 1-, 2-, 3- and 4-byte characters, so every split point lands inside some sequence.
const TEXT = 'a é € 😀 ü日本 🚀z';

type Piece = { data: string; encoding: OutputEncoding };

function bytesOf(pieces: Piece[]): Buffer {
  return Buffer.concat(pieces.map((p) => Buffer.from(p.data, p.encoding === 'utf8' ? 'utf8' : 'base64')));
}

function encodeChunks(chunks: Buffer[]): Piece[] {
  const enc = new StreamEncoder();
  const out: Piece[] = [];
  for (const c of chunks) {
    const p = enc.push(c);
    if (p) out.push(p);
  }
  const last = enc.flush();
  if (last) out.push(last);
  return out;
}

describe('isUtf8', () => {
  it('accepts UTF-8 and rejects invalid or truncated sequences', () => {
    expect(isUtf8(Buffer.from(TEXT))).toBe(true);
    expect(isUtf8(Buffer.alloc(0))).toBe(true);
    expect(isUtf8(Buffer.from([0xff]))).toBe(false);
    expect(isUtf8(Buffer.from([0xc3]))).toBe(false); // lead byte without its continuation
    expect(isUtf8(Buffer.from([0xc0, 0x80]))).toBe(false); // overlong NUL
    expect(isUtf8(Buffer.from([0xed, 0xa0, 0x80]))).toBe(false); // UTF-16 surrogate
  });
});

describe('encodeOutput', () => {
  it('keeps text as utf8 when both streams are UTF-8', () => {
    expect(encodeOutput(Buffer.from(TEXT), Buffer.from('warn\n'))).toEqual({ stdout: TEXT, stderr: 'warn\n', encoding: 'utf8' });
  });

  it('switches both streams to base64 of the exact bytes when either is not UTF-8', () => {
    const raw = Buffer.from([0x00, 0xff, 0xfe, 0x41]);
    const r = encodeOutput(Buffer.from('ok'), raw);
    expect(r.encoding).toBe('base64');
    expect(Buffer.from(r.stdout, 'base64').toString()).toBe('ok');
    expect(Buffer.from(r.stderr, 'base64')).toEqual(raw);
  });
});

describe('incompleteTail', () => {
  it('counts the bytes of a sequence started but not finished', () => {
    const euro = Buffer.from('€'); // e2 82 ac
    const face = Buffer.from('😀'); // f0 9f 98 80
    expect(incompleteTail(Buffer.from('abc'))).toBe(0);
    expect(incompleteTail(Buffer.alloc(0))).toBe(0);
    expect(incompleteTail(euro)).toBe(0);
    expect(incompleteTail(euro.subarray(0, 1))).toBe(1);
    expect(incompleteTail(euro.subarray(0, 2))).toBe(2);
    expect(incompleteTail(face)).toBe(0);
    expect(incompleteTail(face.subarray(0, 3))).toBe(3);
    expect(incompleteTail(Buffer.concat([Buffer.from('x'), face.subarray(0, 2)]))).toBe(2);
  });
});

describe('StreamEncoder', () => {
  it('reassembles text split at every byte boundary, as utf8 pieces only', () => {
    const bytes = Buffer.from(TEXT);
    for (let i = 0; i <= bytes.length; i++) {
      const pieces = encodeChunks([bytes.subarray(0, i), bytes.subarray(i)]);
      expect(pieces.every((p) => p.encoding === 'utf8'), `split at ${i}`).toBe(true);
      expect(pieces.map((p) => p.data).join(''), `split at ${i}`).toBe(TEXT);
    }
  });

  it('reassembles text fed one byte at a time', () => {
    const bytes = Buffer.from(TEXT);
    const pieces = encodeChunks([...bytes].map((b) => Buffer.from([b])));
    expect(pieces.every((p) => p.encoding === 'utf8')).toBe(true);
    expect(pieces.map((p) => p.data).join('')).toBe(TEXT);
  });

  it('turns invalid bytes into base64 that decodes to the exact bytes', () => {
    const raw = Buffer.concat([Buffer.from('pre '), Buffer.from([0xff, 0xfe, 0x00, 0x80]), Buffer.from(' post €')]);
    for (let i = 0; i <= raw.length; i++) {
      const pieces = encodeChunks([raw.subarray(0, i), raw.subarray(i)]);
      expect(bytesOf(pieces), `split at ${i}`).toEqual(raw);
    }
    const [only] = encodeChunks([Buffer.from([0xff, 0x00])]);
    expect(only).toEqual({ data: Buffer.from([0xff, 0x00]).toString('base64'), encoding: 'base64' });
  });

  it('flushes a dangling partial sequence at the end as base64 of its bytes', () => {
    const partial = Buffer.from('€').subarray(0, 2);
    const enc = new StreamEncoder();
    expect(enc.push(Buffer.concat([Buffer.from('ok'), partial]))).toEqual({ data: 'ok', encoding: 'utf8' });
    const last = enc.flush();
    expect(last?.encoding).toBe('base64');
    expect(Buffer.from(last!.data, 'base64')).toEqual(partial);
    expect(enc.flush()).toBeUndefined();
  });
});
