import { describe, expect, it } from 'vitest';
import { OutputRing } from './output-ring.js';

describe('OutputRing', () => {
  it('reads incrementally by absolute offset', () => {
    const r = new OutputRing(64);
    r.push(Buffer.from('hello '));
    const a = r.read(0);
    expect(a).toMatchObject({ from: 0, next: 6, dropped: 0 });
    expect(a.data.toString()).toBe('hello ');
    r.push(Buffer.from('world'));
    const b = r.read(a.next);
    expect(b.data.toString()).toBe('world');
    expect(b).toMatchObject({ from: 6, next: 11, dropped: 0 });
    expect(r.read(b.next)).toMatchObject({ from: 11, next: 11, dropped: 0 });
    expect(r.read(b.next).data.length).toBe(0);
  });

  it('keeps only the last capacity bytes and says how many a reader missed', () => {
    const r = new OutputRing(10);
    for (let i = 0; i < 5; i++) r.push(Buffer.from(`${i}abcd`)); // 25 bytes
    expect(r.end).toBe(25);
    expect(r.start).toBe(15);
    const got = r.read(3);
    expect(got.data.toString()).toBe('3abcd4abcd');
    expect(got).toMatchObject({ from: 15, next: 25, dropped: 12 });
    // Reading from inside the held window drops nothing.
    expect(r.read(17).data.toString()).toBe('bcd4abcd');
  });

  it('keeps the tail of a chunk larger than the ring', () => {
    const r = new OutputRing(4);
    r.push(Buffer.from('0123456789'));
    expect(r.read(0)).toMatchObject({ from: 6, next: 10, dropped: 6 });
    expect(r.read(0).data.toString()).toBe('6789');
  });

  it('reads at most max bytes, across chunks', () => {
    const r = new OutputRing(100);
    r.push(Buffer.from('abc'));
    r.push(Buffer.from('def'));
    const a = r.read(1, { max: 4 });
    expect(a.data.toString()).toBe('bcde');
    expect(a.next).toBe(5);
  });

  it('keeps an offset past the end until the stream reaches it', () => {
    const r = new OutputRing(8);
    r.push(Buffer.from('ab'));
    expect(r.read(4)).toMatchObject({ from: 4, next: 4, dropped: 0 });
    r.push(Buffer.from('cdef'));
    expect(r.read(4).data.toString()).toBe('ef');
  });

  it('with wholeChars leaves a character cut at the end for the next read', () => {
    const r = new OutputRing(100);
    const euro = Buffer.from('€'); // 3 bytes
    r.push(Buffer.concat([Buffer.from('a'), euro.subarray(0, 2)]));
    const a = r.read(0, { wholeChars: true });
    expect(a.data.toString()).toBe('a');
    expect(a.next).toBe(1);
    // Only the incomplete character is there: nothing yet, unless asked without wholeChars.
    expect(r.read(1, { wholeChars: true }).data.length).toBe(0);
    expect(r.read(1).data).toEqual(euro.subarray(0, 2));
    r.push(euro.subarray(2));
    expect(r.read(1, { wholeChars: true }).data.toString()).toBe('€');
    // A max that cuts inside one character still moves the reader on.
    expect(r.read(1, { wholeChars: true, max: 1 }).data.length).toBe(1);
  });
});
