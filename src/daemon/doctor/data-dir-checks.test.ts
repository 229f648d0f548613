import { describe, expect, it } from 'vitest';
import { checkDataDir, checkDiskSpace } from './data-dir-checks.js';
import { fakeContext, fakeHost } from './fake-host.test-support.js';

const dir = { kind: 'dir' as const, mtimeMs: 0 };
const GiB = 1024 ** 3;

describe('data dir check', () => {
  it('is ok when it exists and is writable, and names a prismd already using it', async () => {
    const sys = fakeHost({ stats: { '/var/lib/prism': dir }, files: { '/var/lib/prism/prismd.pid': '4242\n' }, processAlive: (pid) => pid === 4242 });
    expect(await checkDataDir(fakeContext({ sys }))).toMatchObject({ status: 'ok', detail: '/var/lib/prism is writable; a prismd (pid 4242) is using it' });
  });

  it('is ok when it can be made, and fails when it cannot or is not writable', async () => {
    const stats = { '/var/lib': dir, '/var': dir, '/': dir };
    expect(await checkDataDir(fakeContext({ sys: fakeHost({ stats }) }))).toMatchObject({ status: 'ok', detail: expect.stringContaining('(/var/lib is writable)') });
    const readOnly = fakeHost({ stats, writable: async () => false });
    expect(await checkDataDir(fakeContext({ sys: readOnly }))).toMatchObject({ status: 'fail', detail: expect.stringContaining('/var/lib is not writable'), fix: expect.stringContaining('--data-dir') });
    const notWritable = fakeHost({ stats: { '/var/lib/prism': dir }, writable: async () => false });
    expect(await checkDataDir(fakeContext({ sys: notWritable }))).toMatchObject({ status: 'fail', detail: '/var/lib/prism is not writable' });
    const aFile = fakeHost({ stats: { '/var/lib/prism': { kind: 'file', mtimeMs: 0 } } });
    expect(await checkDataDir(fakeContext({ sys: aFile }))).toMatchObject({ status: 'fail', detail: '/var/lib/prism is not a directory' });
  });
});

describe('disk space check', () => {
  const withFree = (bytes: number) => fakeHost({ stats: { '/var/lib/prism': dir }, freeBytes: async () => bytes });

  it('warns under 5 GiB and fails under 1 GiB free on the data dir', async () => {
    expect(await checkDiskSpace(fakeContext({ sys: withFree(40 * GiB) }))).toEqual({ name: 'disk space', status: 'ok', detail: '40.0 GiB free on the filesystem of /var/lib/prism' });
    expect(await checkDiskSpace(fakeContext({ sys: withFree(4.5 * GiB) }))).toMatchObject({ status: 'warn', fix: expect.stringContaining('--data-dir') });
    expect(await checkDiskSpace(fakeContext({ sys: withFree(0.5 * GiB) }))).toMatchObject({ status: 'fail' });
  });

  it('measures the nearest existing parent of a data dir not made yet', async () => {
    let asked = '';
    const sys = fakeHost({ stats: { '/var': dir }, freeBytes: async (p) => ((asked = p), 10 * GiB) });
    await checkDiskSpace(fakeContext({ sys }));
    expect(asked).toBe('/var');
  });
});
