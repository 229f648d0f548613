import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { selectVmm } from './vmm-select.js';

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
  const select = (firecrackerBinary?: string) => selectVmm({ qemuBinary: 'qemu-system-x86_64', firecrackerBinary, restoreTimeoutMs: 1_000 });

  it('picks QEMU without a firecracker executable on PATH, Firecracker with one, and an explicit binary always', async () => {
    await mkdir(join(dir, 'bin'));
    await writeFile(join(dir, 'bin', 'firecracker'), 'not executable');
    process.env.PATH = join(dir, 'bin');
    expect(select()).toMatchObject({ name: 'qemu', binary: 'qemu-system-x86_64' });
    await chmod(join(dir, 'bin', 'firecracker'), 0o755);
    expect(select()).toMatchObject({ name: 'firecracker', binary: join(dir, 'bin', 'firecracker') });
    process.env.PATH = [join(dir, 'none'), dir].join(delimiter);
    // Given explicitly, it is used even if missing: the driver's probe then reports why it cannot run.
    expect(select(join(dir, 'missing'))).toMatchObject({ name: 'firecracker', binary: join(dir, 'missing') });
  });
});
