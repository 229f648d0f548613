import { describe, expect, it } from 'vitest';
import {
  decodeExit, decodeFields, exitFromFrame, decodeHello, decodeMountReply, decodeStart, encodeChunked, encodeExit, encodeFields, encodeFrame,
  encodePtyStart, encodeSize, encodeStart, encodeWindow, FrameParser, FrameType, MAX_PAYLOAD, UNLIMITED_OUTPUT,
} from './agent-protocol.js';

describe('agent protocol', () => {
  it('encodes the 9-byte header big-endian', () => {
    const f = encodeFrame(FrameType.Stdout, 0x01020304, Buffer.from('hi'));
    expect([...f]).toEqual([0x4f, 1, 2, 3, 4, 0, 0, 0, 2, 0x68, 0x69]);
  });

  it('encodes a window limit as 8 bytes big-endian, up to 2^64-1', () => {
    expect([...encodeWindow(0x0102030405)]).toEqual([0, 0, 0, 1, 2, 3, 4, 5]);
    expect([...encodeWindow(UNLIMITED_OUTPUT)]).toEqual(Array(8).fill(0xff));
  });

  it('parses frames split at every byte and several frames in one chunk', () => {
    const frames = [
      encodeFrame(FrameType.HelloReply, 0, Buffer.from('prism-agent 1 booted')),
      encodeFrame(FrameType.Stderr, 7, Buffer.alloc(0)),
      encodeFrame(FrameType.Exit, 7, encodeExit({ exitCode: 137, signal: 9 })),
    ];
    const all = Buffer.concat(frames);
    const parser = new FrameParser();
    const got = [];
    for (let i = 0; i < all.length; i++) got.push(...parser.push(all.subarray(i, i + 1)));
    expect(got.map((f) => [f.type, f.channel, f.payload.toString()])).toEqual([
      ['h', 0, 'prism-agent 1 booted'], ['E', 7, ''], ['X', 7, '137 9'],
    ]);
    expect(parser.pending).toBe(0);
    expect(new FrameParser().push(all)).toHaveLength(3);
  });

  it('encodes a terminal start as the size fields followed by a start payload, and refuses bad sizes', () => {
    const req = { cwd: '/', stdin: true, argv: ['sh'], env: { TERM: 'xterm' } };
    const p = encodePtyStart(req, 80, 24);
    expect(decodeFields(p).slice(0, 2)).toEqual(['80', '24']);
    expect(decodeStart(p.subarray(encodeSize(80, 24).length))).toEqual(req);
    for (const [c, r] of [[0, 24], [80, 65536], [1.5, 2]] as const) expect(() => encodeSize(c, r)).toThrow(/terminal size/);
  });

  it('rejects an oversized length', () => {
    const bad = Buffer.alloc(9);
    bad.write('O');
    bad.writeUInt32BE(MAX_PAYLOAD + 1, 5);
    expect(() => new FrameParser().push(bad)).toThrow(/limit/);
  });

  it('chunks stdin into frames of at most 1 MiB', () => {
    const frames = encodeChunked(FrameType.Stdin, 3, Buffer.alloc(MAX_PAYLOAD * 2 + 5));
    expect(frames.map((f) => f.readUInt32BE(5))).toEqual([MAX_PAYLOAD, MAX_PAYLOAD, 5]);
  });

  it('round-trips NUL-terminated fields and rejects NUL inside', () => {
    expect(decodeFields(encodeFields(['a', '', 'ü b']))).toEqual(['a', '', 'ü b']);
    expect(encodeFields(['x', '']).toString('latin1')).toBe('x\0\0');
    expect(() => encodeFields(['a\0b'])).toThrow();
    expect(() => decodeFields(Buffer.from('a\0b'))).toThrow();
  });

  it('encodes a start request as the agent reads it', () => {
    const payload = encodeStart({ cwd: '/tmp', stdin: true, argv: ['sh', '-c', 'x'], env: { A: '1', B: 'x=y' }, user: '1000 1000 1000' });
    expect(payload.toString('latin1')).toBe('/tmp\0stdin\x003\0sh\0-c\0x\x002\0A=1\0B=x=y\x001000 1000 1000\0');
    expect(decodeStart(payload)).toEqual({ cwd: '/tmp', stdin: true, argv: ['sh', '-c', 'x'], env: { A: '1', B: 'x=y' }, user: '1000 1000 1000' });
    const root = encodeStart({ cwd: '/', stdin: false, argv: ['true'], env: {} });
    expect(root.toString('latin1')).toBe('/\0\x001\0true\x000\0\0');
    expect(() => encodeStart({ cwd: '/', stdin: false, argv: [], env: {} })).toThrow();
    expect(() => encodeStart({ cwd: '/', stdin: false, argv: ['x'], env: { 'A=B': '1' } })).toThrow();
  });

  it('decodes exit, hello and mount replies', () => {
    expect(decodeExit(Buffer.from('3 0'))).toEqual({ exitCode: 3, signal: 0 });
    expect(decodeExit(Buffer.from('137 9'))).toEqual({ exitCode: 137, signal: 9 });
    expect(decodeExit(Buffer.from('137 9 oom'))).toEqual({ exitCode: 137, signal: 9, oomKilled: true });
    expect(encodeExit({ exitCode: 137, signal: 9, oomKilled: true }).toString()).toBe('137 9 oom');
    expect(exitFromFrame(Buffer.from('137 9 oom'))).toEqual({ exitCode: 137, signal: 'SIGKILL', oomKilled: true });
    expect(exitFromFrame(Buffer.from('137 9'))).toEqual({ exitCode: 137, signal: 'SIGKILL' });
    expect(() => decodeExit(Buffer.from('137 9 oops'))).toThrow();
    expect(() => decodeExit(Buffer.from('x'))).toThrow();
    expect(decodeHello(Buffer.from('prism-agent 1 ready'))).toEqual({ version: 1, state: 'ready', channels: [] });
    expect(decodeHello(Buffer.from('prism-agent 7 ready 3 12'))).toEqual({ version: 7, state: 'ready', channels: [3, 12] });
    expect(() => decodeHello(Buffer.from('hello'))).toThrow();
    expect(decodeMountReply(Buffer.from('ok'))).toBeNull();
    expect(decodeMountReply(Buffer.from('ok\0'))).toBeNull();
    expect(decodeMountReply(Buffer.from('error: no /dev/vdb'))).toBe('no /dev/vdb');
  });
});
