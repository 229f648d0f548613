import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { demuxWithBackpressure } from './demux.js';

const frame = (type: 1 | 2, payload: Buffer) => {
  const h = Buffer.alloc(8);
  h[0] = type;
  h.writeUInt32BE(payload.length, 4);
  return Buffer.concat([h, payload]);
};

describe('demuxWithBackpressure', () => {
  it('splits frames into stdout and stderr, whatever the chunking', async () => {
    const wire = Buffer.concat([frame(1, Buffer.from('hello ')), frame(2, Buffer.from('oops')), frame(1, Buffer.from('world')), frame(1, Buffer.alloc(0))]);
    for (const step of [1, 3, 7, 8, 9, wire.length]) {
      const source = new PassThrough();
      const out = new PassThrough();
      const err = new PassThrough();
      let o = '';
      let e = '';
      out.on('data', (c: Buffer) => (o += c.toString()));
      err.on('data', (c: Buffer) => (e += c.toString()));
      demuxWithBackpressure(source, out, err);
      for (let i = 0; i < wire.length; i += step) source.write(wire.subarray(i, i + step));
      source.end();
      await new Promise((r) => setImmediate(r));
      expect([o, e], `chunks of ${step}`).toEqual(['hello world', 'oops']);
    }
  });

  it('pauses the source while a target is full, and resumes when it drains', async () => {
    const source = new PassThrough();
    const taken: Buffer[] = [];
    let release: (() => void) | undefined;
    // A slow reader: takes one write, then holds the next until released.
    const slow = new Writable({
      highWaterMark: 16,
      write(chunk: Buffer, _enc, done) {
        taken.push(chunk);
        release = done;
      },
    });
    demuxWithBackpressure(source, slow, new PassThrough());
    source.write(frame(1, Buffer.alloc(64, 1)));
    await new Promise((r) => setImmediate(r));
    expect(source.isPaused()).toBe(true);
    release!();
    await new Promise((r) => setImmediate(r));
    expect(source.isPaused()).toBe(false);
    expect(taken.reduce((n, c) => n + c.length, 0)).toBe(64);
  });

  it('waits for one drain per full target, however many frames of a chunk found it full', async () => {
    const source = new PassThrough();
    const out = new PassThrough({ highWaterMark: 4 });
    const err = new PassThrough({ highWaterMark: 4 });
    demuxWithBackpressure(source, out, err);
    const frames = Array.from({ length: 30 }, (_, i) => frame(i % 3 === 0 ? 2 : 1, Buffer.from(`frame ${i};`)));
    source.write(Buffer.concat(frames));
    await new Promise((r) => setImmediate(r));
    expect(source.isPaused()).toBe(true);
    expect([out.listenerCount('drain'), err.listenerCount('drain')]).toEqual([1, 1]);
    const read = (s: PassThrough) => new Promise<string>((resolve) => {
      let text = '';
      s.on('data', (c: Buffer) => (text += c.toString()));
      s.on('end', () => resolve(text));
    });
    const [o, e] = [read(out), read(err)];
    await new Promise((r) => setImmediate(r));
    expect(source.isPaused()).toBe(false);
    out.end();
    err.end();
    expect(await o).toBe(frames.map((_, i) => (i % 3 === 0 ? '' : `frame ${i};`)).join(''));
    expect(await e).toBe(frames.map((_, i) => (i % 3 === 0 ? `frame ${i};` : '')).join(''));
  });
});
