import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { FirecrackerVmm } from './firecracker/firecracker-vmm.js';
import { QemuVmm } from './qemu-vmm.js';
import type { Vmm } from './vmm.js';

/**
 * Firecracker when `firecrackerBinary` is given (even if it is not executable: the probe then says
 * why, rather than silently running QEMU) or a `firecracker` executable is on PATH; else QEMU.
 * Synchronous because the driver is built synchronously; it looks at a handful of PATH entries.
 */
export function selectVmm(o: { qemuBinary: string; firecrackerBinary?: string | undefined; restoreTimeoutMs: number }): Vmm {
  const firecracker = o.firecrackerBinary ?? firecrackerOnPath();
  return firecracker ? new FirecrackerVmm({ binary: firecracker }) : new QemuVmm(o.qemuBinary, o.restoreTimeoutMs);
}

function firecrackerOnPath(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const candidate = join(dir, 'firecracker');
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
