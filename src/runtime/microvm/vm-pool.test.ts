import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QemuVmm } from './qemu-vmm.js';
import { WarmPool } from './vm-pool.js';

describe('WarmPool without QEMU', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'prism-pool-'));
  });
  afterEach(() => rm(root, { recursive: true, force: true }));
  const pool = (size: number) => new WarmPool({ dir: join(root, 'pool'), size, vmm: new QemuVmm(), bootTimeoutMs: 1_000 });

  it("sweeps a crashed prismd's pool directories, never signalling a pid that is not their VMM", async () => {
    const left = join(root, 'pool', 'abcd1234');
    await mkdir(left, { recursive: true });
    // A recycled pid: this test process, whose command line does not name the VM's agent socket.
    await writeFile(join(left, 'qemu.pid'), String(process.pid));
    await pool(0).sweep();
    expect(await readdir(join(root, 'pool'))).toEqual([]);
  });

  it('hands out nothing when empty or of size 0, and fills nothing after close', async () => {
    const p = pool(2);
    expect(await p.take('k')).toBeUndefined();
    await p.close();
    await p.fill('k', {} as never, join(root, 'state'));
    expect(p.count('k')).toBe(0);
    expect(await readdir(root)).toEqual([]);
  });
});
