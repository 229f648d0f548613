import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Prism, type SandboxHandle } from '../../src/sdk/index.js';
import { code, filesSuite, randomStream } from './files-suite.js';
import { REPO_ROOT, call, integrationSkipReason, leftovers, startPrismd, type Prismd } from './prismd-harness.js';

const skip = integrationSkipReason();
if (skip) console.warn(`skipping files API tests: ${skip}`);

const MAX_FILE_MB = 60;

describe.skipIf(!!skip)('files API on the oci runtime', () => {
  let d: Prismd;
  let prism: Prism;
  let a: SandboxHandle;
  let b: SandboxHandle;

  beforeAll(async () => {
    d = await startPrismd({ extraArgs: ['--max-file-mb', String(MAX_FILE_MB)] });
    prism = new Prism({ url: d.url, token: d.token });
    [a, b] = await Promise.all([prism.sandboxes.create({ name: 'fa' }), prism.sandboxes.create({ name: 'fb' })]);
  }, 60_000);
  afterAll(async () => {
    await d?.dispose();
  });

  filesSuite({ sandboxes: () => ({ a, b }), roundTripBytes: 50 << 20, timeoutMs: 120_000 });

  it('makes, lists, moves and removes directories and files', async () => {
    await a.files.mkdir('/home/sandbox/m/n/o', { parents: true, mode: 0o700 });
    expect(await code(a.files.mkdir('/home/sandbox/m'))).toBe('ALREADY_EXISTS');
    expect(await code(a.files.mkdir('/home/sandbox/x/y'))).toBe('NOT_FOUND');
    await a.files.write('/home/sandbox/m/f.txt', 'one');
    await a.files.move('/home/sandbox/m/f.txt', '/home/sandbox/m/n/g.txt');
    expect((await a.files.list('/home/sandbox/m')).map((e) => [e.name, e.type])).toEqual([['n', 'dir']]);
    expect((await a.files.list('/home/sandbox/m/n')).map((e) => [e.name, e.type, e.mode])).toEqual([['g.txt', 'file', 0o644], ['o', 'dir', 0o700]]);
    expect(await code(a.files.move('/home/sandbox/nope', '/home/sandbox/x'))).toBe('NOT_FOUND');
    expect(await code(a.files.remove('/home/sandbox/m'))).toBe('FAILED_PRECONDITION');
    await a.files.remove('/home/sandbox/m', { recursive: true });
    expect(await code(a.files.stat('/home/sandbox/m'))).toBe('NOT_FOUND');
  });

  it('refuses a file past --max-file-mb with PAYLOAD_TOO_LARGE, and an aborted upload changes nothing and leaves no temp file', async () => {
    await a.files.write('/home/sandbox/keep.txt', 'original');
    const big = randomStream((MAX_FILE_MB + 1) << 20);
    expect(await code(a.files.write('/home/sandbox/keep.txt', big.stream))).toBe('PAYLOAD_TOO_LARGE');
    const ac = new AbortController();
    let sent = 0;
    const slow = new ReadableStream<Uint8Array>({
      async pull(c) {
        sent += 1 << 20;
        c.enqueue(new Uint8Array(1 << 20));
        if (sent >= 8 << 20) ac.abort();
        await new Promise((r) => setTimeout(r, 10));
      },
    });
    const outcome = await a.files.write('/home/sandbox/keep.txt', slow, { signal: ac.signal }).then(() => 'completed', () => 'aborted');
    expect(outcome).toBe('aborted');
    // The daemon sees the connection cut and ends the helper, which drops its temp file.
    const tempFiles = async () => (await a.files.list('/home/sandbox')).filter((e) => e.name.startsWith('.prism-upload'));
    for (let i = 0; i < 50 && (await tempFiles()).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await tempFiles()).toEqual([]);
    expect(await a.files.readText('/home/sandbox/keep.txt')).toBe('original');
    // Reads are capped too: a file grown past the limit inside the sandbox cannot be downloaded.
    await a.exec(`truncate -s ${MAX_FILE_MB + 1}M /home/sandbox/huge`);
    expect(await code(a.files.read('/home/sandbox/huge'))).toBe('PAYLOAD_TOO_LARGE');
    await a.files.remove('/home/sandbox/huge');
  }, 60_000);

  it('copies files and directories both ways with prismctl sandbox cp, and lists with files ls', () => {
    const local = mkdtempSync(join(tmpdir(), 'prism-cp-'));
    try {
      const ctl = (...args: string[]) => {
        const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'prismctl.js'), '--api', d.api, ...args], {
          encoding: 'utf8', timeout: 60_000, env: { ...process.env, PRISM_TOKEN: d.token, PRISM_CONFIG: join(local, 'cfg.json') },
        });
        expect(r.status, r.stderr).toBe(0);
        return r.stdout;
      };
      mkdirSync(join(local, 'src', 'sub'), { recursive: true });
      writeFileSync(join(local, 'src', 'a.txt'), 'alpha\n', { mode: 0o600 });
      writeFileSync(join(local, 'src', 'sub', 'b.bin'), Buffer.from([0, 1, 2, 255]));
      symlinkSync('a.txt', join(local, 'src', 'link'));
      const subTime = new Date('2024-05-06T07:08:09Z');
      utimesSync(join(local, 'src', 'sub'), subTime, subTime);
      ctl('sandbox', 'cp', join(local, 'src', 'a.txt'), 'fa:/home/sandbox/');
      ctl('sandbox', 'cp', join(local, 'src'), 'fa:/home/sandbox/tree');
      expect(ctl('sandbox', 'files', 'ls', 'fa', '/home/sandbox/tree')).toMatch(/link -> a\.txt/);
      ctl('sandbox', 'cp', 'fa:/home/sandbox/tree', join(local, 'back'));
      ctl('sandbox', 'cp', 'fa:/home/sandbox/a.txt', join(local, 'a-back.txt'));
      expect(readFileSync(join(local, 'a-back.txt'), 'utf8')).toBe('alpha\n');
      expect(statSync(join(local, 'a-back.txt')).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(local, 'back', 'sub', 'b.bin'))).toEqual(Buffer.from([0, 1, 2, 255]));
      expect(readlinkSync(join(local, 'back', 'link'))).toBe('a.txt');
      // Directories keep their mtimes both ways (node-tar's "portable" mode would zero them).
      expect(statSync(join(local, 'back', 'sub')).mtime.toISOString()).toBe(subTime.toISOString());
      const listed = JSON.parse(ctl('-o', 'json', 'sandbox', 'files', 'ls', 'fa', '/home/sandbox'));
      expect(listed.entries.map((e: { name: string }) => e.name)).toEqual(expect.arrayContaining(['a.txt', 'tree']));
    } finally {
      rmSync(local, { recursive: true, force: true });
    }
  }, 60_000);

  it('says FAILED_PRECONDITION for a stopped sandbox, and leaves nothing behind on delete', async () => {
    const c = await prism.sandboxes.create({ name: 'fc' });
    await c.files.write('/home/sandbox/kept', 'kept across stop');
    await c.stop();
    expect(await code(c.files.read('/home/sandbox/kept'))).toBe('FAILED_PRECONDITION');
    expect(await code(c.files.write('/home/sandbox/x', 'x'))).toBe('FAILED_PRECONDITION');
    await c.start();
    expect(await c.files.readText('/home/sandbox/kept')).toBe('kept across stop');
    await c.delete();
    expect(leftovers(c.id, d.dataDir)).toEqual([]);
    expect((await call(d.url, 'GET', `/sandboxes/${c.id}/files/list?path=/`)).status).toBe(404);
  }, 60_000);
});
