import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { x as extract } from 'tar';
import { afterEach, describe, expect, it } from 'vitest';
import { resolvConfArchive } from './resolv-conf.js';

let dir = '';
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function unpack(archive: Buffer): Promise<string> {
  dir = await mkdtemp(join(tmpdir(), 'prism-resolv-'));
  await pipeline(Readable.from([archive]), extract({ cwd: dir }));
  return join(dir, 'resolv.conf');
}

describe('resolvConfArchive', () => {
  it('is a tar of one 0644 resolv.conf naming the name servers', async () => {
    const file = await unpack(resolvConfArchive(['10.203.0.1', '10.203.0.5']));
    expect(await readFile(file, 'utf8')).toBe('nameserver 10.203.0.1\nnameserver 10.203.0.5\n');
    expect((await stat(file)).mode & 0o777).toBe(0o644);
  });

  it('says so when the policy resolves no names (not the host resolver the engine would copy)', async () => {
    expect(await readFile(await unpack(resolvConfArchive([])), 'utf8')).toMatch(/^# no name servers/);
  });
});
