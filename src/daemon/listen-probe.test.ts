import { createServer, type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { listenProblem, tryListen } from './listen-probe.js';

describe('tryListen', () => {
  it('says EADDRINUSE while another socket listens on the port, and free once it is gone (leaving nothing bound)', async () => {
    const other = createServer();
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const { port } = other.address() as AddressInfo;
    try {
      expect(await tryListen('127.0.0.1', port)).toBe('EADDRINUSE');
    } finally {
      await new Promise((r) => other.close(r));
    }
    expect(await tryListen('127.0.0.1', port)).toBe('free');
    expect(await tryListen('127.0.0.1', port)).toBe('free');
  });

  it('turns the bind error into what to do', () => {
    expect(listenProblem('127.0.0.1', 8008, 'EADDRINUSE')).toMatch(/127\.0\.0\.1:8008 is in use .*--api/);
    expect(listenProblem('::1', 80, 'EACCES')).toMatch(/\[::1\]:80: permission denied \(ports below 1024 need root\)/);
    expect(listenProblem('10.9.9.9', 8008, 'EADDRNOTAVAIL')).toContain('10.9.9.9 is not an address of this host');
  });
});
