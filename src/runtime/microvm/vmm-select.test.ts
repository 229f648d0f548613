import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { selectVmm } from './vmm-select.js';
import type { VmmName } from './vmm.js';

describe('selectVmm', () => {
  let dir: string;
  const savedPath = process.env.PATH;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-vmm-'));
  });
  afterEach(async () => {
    process.env.PATH = savedPath;
    await rm(dir, { recursive: true, force: true });
  });
  const select = (vmm?: VmmName, firecrackerBinary?: string) =>
    selectVmm({ vmm, qemuBinary: 'qemu-system-x86_64', firecrackerBinary });

  it('picks QEMU by default, even with a firecracker executable on PATH or a --firecracker-bin', async () => {
    await mkdir(join(dir, 'bin'));
    await writeFile(join(dir, 'bin', 'firecracker'), '#!/bin/sh\n');
    await chmod(join(dir, 'bin', 'firecracker'), 0o755);
    process.env.PATH = join(dir, 'bin');
    expect(select()).toMatchObject({ name: 'qemu', binary: 'qemu-system-x86_64' });
    expect(select('qemu', join(dir, 'bin', 'firecracker'))).toMatchObject({ name: 'qemu' });
  });

  it('picks Firecracker only when asked, from PATH or the given binary (used even if missing: the probe says why)', () => {
    expect(select('firecracker')).toMatchObject({ name: 'firecracker', binary: 'firecracker' });
    expect(select('firecracker', join(dir, 'missing'))).toMatchObject({ name: 'firecracker', binary: join(dir, 'missing') });
  });
});
