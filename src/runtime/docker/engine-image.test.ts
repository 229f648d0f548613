import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Parser, type ReadEntry } from 'tar';
import { describe, expect, it } from 'vitest';
import { initArchive, registryOf } from './engine-image.js';

describe('registryOf', () => {
  it('names the registry as Docker does: a first component that looks like a host, else Docker Hub', () => {
    expect(registryOf('myapp:dev')).toBe('docker.io');
    expect(registryOf('library/python:3.12')).toBe('docker.io');
    expect(registryOf('127.0.0.1:5000/prism-test/app:1')).toBe('127.0.0.1:5000');
    expect(registryOf('localhost/foo:1')).toBe('localhost');
    expect(registryOf('ghcr.io/org/app@sha256:' + 'a'.repeat(64))).toBe('ghcr.io');
    expect(registryOf('localhost:5000')).toBe('docker.io'); // a name with a tag, not a host
  });
});

describe('initArchive', () => {
  it('is a tar of /.prism and /.prism/init (root, 0755) holding the binary', async () => {
    const binary = Buffer.from('\x7fELF not really, but 600 bytes '.repeat(20));
    const entries: { path: string; type: string; mode?: number; uid?: number; body: string }[] = [];
    const parser = new Parser({
      onReadEntry: (e: ReadEntry) => {
        const body: Buffer[] = [];
        e.on('data', (c: Buffer) => body.push(c));
        e.on('end', () => entries.push({ path: e.path, type: e.type, mode: e.mode, uid: e.uid, body: Buffer.concat(body).toString() }));
      },
    });
    await pipeline(Readable.from([initArchive(binary)]), parser);
    expect(entries).toEqual([
      { path: '.prism/', type: 'Directory', mode: 0o755, uid: 0, body: '' },
      { path: '.prism/init', type: 'File', mode: 0o755, uid: 0, body: binary.toString() },
    ]);
  });
});
