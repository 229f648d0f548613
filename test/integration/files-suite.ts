import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { PrismApiError, type SandboxHandle } from '../../src/sdk/index.js';

/**
 * The files API checks every runtime must pass (oci in files-api.test.ts, microvm and docker in
 * files-runtimes.test.ts): byte-exact round trips, a tree with links, modes and an empty directory
 * carried to a second sandbox by archive, symlinks that cannot reach the host, stable error codes.
 */

export async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof PrismApiError) return e.code;
    throw e;
  }
  return 'OK';
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A stream of `total` random bytes in 1 MiB chunks, hashed as it goes. */
export function randomStream(total: number): { stream: ReadableStream<Uint8Array>; digest: () => string } {
  const h = createHash('sha256');
  let left = total;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (left === 0) return c.close();
      const n = Math.min(left, 1 << 20);
      const chunk = randomBytes(n);
      h.update(chunk);
      left -= n;
      c.enqueue(chunk);
    },
  });
  return { stream, digest: () => h.digest('hex') };
}

async function hashStream(s: ReadableStream<Uint8Array>): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of s as unknown as AsyncIterable<Uint8Array>) {
    h.update(c);
    size += c.length;
  }
  return { digest: h.digest('hex'), size };
}

/** Every entry below `dir` with type, mode, size, mtime (s) and link target, as `find` sees it inside the sandbox. */
export async function tree(sb: SandboxHandle, dir: string): Promise<string[]> {
  const r = await sb.exec(['sh', '-c', `cd ${dir} && find . -mindepth 1 -printf '%p %y %m %s %TY-%Tm-%Td+%TH:%TM:%.2TS %l\\n' | sort`]);
  expect(r.exitCode, new TextDecoder().decode(r.stderr)).toBe(0);
  // Sizes of directories and links depend on the filesystem, not on what was copied.
  return r.text().trim().split('\n').map((l) => l.split(' ')).map(([p, y, m, s, t, l]) => [p, y, m, y === 'f' ? s : '-', y === 'l' ? '-' : t, l].join(' '));
}

export interface SuiteOptions {
  /** Two running sandboxes of the runtime under test. */
  sandboxes: () => { a: SandboxHandle; b: SandboxHandle };
  /** Size of the round-tripped random file. */
  roundTripBytes: number;
  timeoutMs: number;
}

export function filesSuite(o: SuiteOptions): void {
  it('round-trips a random file byte-exact through the SDK, streaming both ways', async () => {
    const { a } = o.sandboxes();
    const src = randomStream(o.roundTripBytes);
    const w = await a.files.write('/home/sandbox/big/blob.bin', src.stream, { mode: 0o640 });
    expect(w.size).toBe(o.roundTripBytes);
    const back = await hashStream(await a.files.readStream('/home/sandbox/big/blob.bin'));
    expect(back).toEqual({ digest: src.digest(), size: o.roundTripBytes });
    expect(await a.files.stat('/home/sandbox/big/blob.bin')).toMatchObject({ type: 'file', size: o.roundTripBytes, mode: 0o640 });
    // Written as the sandbox's user, as code running there would have.
    expect((await a.exec('stat -c "%U %a" /home/sandbox/big/blob.bin')).text()).toBe('sandbox 640\n');
    await a.files.write('/home/sandbox/small.txt', 'héllo\n');
    expect(await a.files.readText('/home/sandbox/small.txt')).toBe('héllo\n');
    expect(sha(await a.files.read('/home/sandbox/small.txt'))).toBe(sha(Buffer.from('héllo\n')));
    await a.files.remove('/home/sandbox/big', { recursive: true });
  }, o.timeoutMs);

  it('carries a tree with symlinks, modes, mtimes and an empty directory to another sandbox by archive', async () => {
    const { a, b } = o.sandboxes();
    const made = await a.exec(['sh', '-c', [
      'set -e; mkdir -p /home/sandbox/proj/src/deep /home/sandbox/proj/empty /home/sandbox/proj/locked',
      'printf "print(1)\\n" > /home/sandbox/proj/src/main.py; chmod 755 /home/sandbox/proj/src/main.py',
      'head -c 200000 /dev/urandom > /home/sandbox/proj/src/deep/data.bin; chmod 600 /home/sandbox/proj/src/deep/data.bin',
      'ln -s src/main.py /home/sandbox/proj/link; ln -s /etc/hostname /home/sandbox/proj/abs; ln -s nowhere /home/sandbox/proj/dangling',
      `mkdir -p /home/sandbox/proj/${'n'.repeat(120)}; echo long > /home/sandbox/proj/${'n'.repeat(120)}/${'f'.repeat(120)}`,
      'chmod 750 /home/sandbox/proj/empty; touch -h -d @1000000000 /home/sandbox/proj/src/main.py /home/sandbox/proj/link',
      'echo x > /home/sandbox/proj/locked/f; chmod 500 /home/sandbox/proj/locked; touch -d @1200000000 /home/sandbox/proj/src/deep',
    ].join('; ')]);
    expect(made.exitCode, new TextDecoder().decode(made.stderr)).toBe(0);
    const tar = new Uint8Array(await new Response(await a.files.downloadArchive('/home/sandbox/proj')).arrayBuffer());
    await b.files.uploadArchive('/home/sandbox/copy', tar);
    const want = await tree(a, '/home/sandbox/proj');
    expect(want.length).toBeGreaterThan(10);
    expect(await tree(b, '/home/sandbox/copy/proj')).toEqual(want);
    const sums = async (sb: SandboxHandle, d: string) => (await sb.exec(['sh', '-c', `cd ${d} && sha256sum src/deep/data.bin src/main.py`])).text();
    expect(await sums(b, '/home/sandbox/copy/proj')).toBe(await sums(a, '/home/sandbox/proj'));
    const list = await b.files.list('/home/sandbox/copy/proj');
    expect(list.find((e) => e.name === 'link')).toMatchObject({ type: 'symlink', linkTarget: 'src/main.py' });
    expect(list.find((e) => e.name === 'empty')).toMatchObject({ type: 'dir', mode: 0o750 });
    for (const sb of [a, b]) await sb.exec('chmod -R u+w /home/sandbox/proj /home/sandbox/copy 2>/dev/null; rm -rf /home/sandbox/proj /home/sandbox/copy');
  }, o.timeoutMs);

  it('never lets a symlink lead a read or write to the host, as the sandbox user or as root', async () => {
    const { a } = o.sandboxes();
    const hostDir = mkdtempSync(join(tmpdir(), 'prism-host-marker-'));
    const marker = join(hostDir, 'secret');
    writeFileSync(marker, 'host secret\n');
    const before = statSync(marker);
    try {
      const depth = '../'.repeat(12);
      const made = await a.exec(['sh', '-c', `ln -s ${marker} /home/sandbox/abs; ln -s ${depth}${marker.slice(1)} /home/sandbox/rel; ln -s ${hostDir} /home/sandbox/dir`]);
      expect(made.exitCode).toBe(0);
      for (const link of ['/home/sandbox/abs', '/home/sandbox/rel', '/home/sandbox/dir/secret']) {
        expect(await code(a.files.read(link))).toBe('NOT_FOUND');
        expect(await code(a.files.read(link, { user: 'root' }))).toBe('NOT_FOUND');
      }
      // A write through a dangling link replaces the link; once the same path exists inside the
      // sandbox, links resolve to it: the sandbox's file, never the host's.
      await a.files.write('/home/sandbox/abs', 'replaced the link');
      expect((await a.files.list('/home/sandbox')).find((e) => e.name === 'abs')).toMatchObject({ type: 'file' });
      await a.files.mkdir(hostDir, { parents: true, user: 'root' });
      await a.files.write('/home/sandbox/dir/secret', 'sandbox side', { user: 'root' });
      expect(await a.files.readText('/home/sandbox/rel')).toBe('sandbox side');
      await a.files.uploadArchive('/home/sandbox/dir', tarOf([{ name: 'secret', data: 'from an archive' }]), { user: 'root' });
      expect(await a.files.readText('/home/sandbox/rel', { user: 'root' })).toBe('from an archive');
      const out = new TextDecoder().decode(await new Response(await a.files.downloadArchive('/home/sandbox/dir', { user: 'root' })).arrayBuffer());
      expect(out).toContain('from an archive');
      expect(out).not.toContain('host secret');
      // An archive that plants a link and then writes through it is refused at the link.
      const evil = tarOf([{ name: 'x', link: hostDir }, { name: 'x/secret', data: 'pwned' }]);
      expect(await code(a.files.uploadArchive('/home/sandbox/evil', evil, { user: 'root' }))).toBe('INVALID_ARGUMENT');
      expect(await code(a.files.uploadArchive('/home/sandbox/evil', tarOf([{ name: '../../../tmp/up', data: 'x' }])))).toBe('INVALID_ARGUMENT');
      expect(await code(a.files.uploadArchive('/home/sandbox/evil', tarOf([{ name: `/${marker.slice(1)}`, data: 'x' }])))).toBe('INVALID_ARGUMENT');
      expect(readFileSync(marker, 'utf8')).toBe('host secret\n');
      expect(statSync(marker).mtimeMs).toBe(before.mtimeMs);
      expect(readdirSync(hostDir)).toEqual(['secret']);
      await a.files.remove(hostDir, { recursive: true, user: 'root' });
      for (const p of ['abs', 'rel', 'dir', 'evil']) await a.files.remove(`/home/sandbox/${p}`, { recursive: true }).catch(() => undefined);
    } finally {
      rmSync(hostDir, { recursive: true, force: true });
    }
  }, o.timeoutMs);

  it('answers with stable codes: bad paths, missing files, directories, permissions', async () => {
    const { a } = o.sandboxes();
    expect(await code(a.files.read('relative/path'))).toBe('INVALID_ARGUMENT');
    expect(await code(a.files.write('', 'x'))).toBe('INVALID_ARGUMENT');
    expect(await code(a.files.read('/no/such/file'))).toBe('NOT_FOUND');
    expect(await code(a.files.list('/no/such/dir'))).toBe('NOT_FOUND');
    expect(await code(a.files.read('/home'))).toBe('INVALID_ARGUMENT');
    expect(await code(a.files.write('/etc/prism-test', 'x'))).toBe('PERMISSION_DENIED');
    await a.files.write('/etc/prism-test', 'as root', { user: 'root' });
    expect(await a.files.readText('/etc/prism-test')).toBe('as root');
    await a.files.remove('/etc/prism-test', { user: 'root' });
    expect(await code(a.files.remove('/'))).toBe('INVALID_ARGUMENT');
  }, o.timeoutMs);
}

/** A small ustar archive for the hostile-archive checks (names as given, no normalisation). */
export function tarOf(entries: { name: string; data?: string; link?: string }[]): Uint8Array {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const h = Buffer.alloc(512);
    const data = Buffer.from(e.data ?? '');
    h.write(e.name, 0, 100);
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
    h.write(`${Math.floor(Date.now() / 1000).toString(8).padStart(11, '0')}\0`, 136);
    h.write(e.link ? '2' : '0', 156);
    if (e.link) h.write(e.link, 157, 100);
    h.write('ustar\0', 257);
    h.write('00', 263);
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return new Uint8Array(Buffer.concat(blocks));
}
