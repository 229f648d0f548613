import { FirecrackerVmm } from './firecracker/firecracker-vmm.js';
import { QemuVmm } from './qemu-vmm.js';
import type { Vmm, VmmName } from './vmm.js';

/**
 * QEMU unless Firecracker is asked for by name. Firecracker is opt-in because the backend has never
 * run against a real Firecracker (docs/runtimes.md): finding a `firecracker` on PATH must not move
 * a host's microVMs onto it. `firecrackerBinary` only says where the binary is (default: PATH); a
 * binary that does not run is reported by the driver's probe rather than replaced by QEMU.
 */
export function selectVmm(o: { vmm?: VmmName | undefined; qemuBinary: string; firecrackerBinary?: string | undefined; ramDir?: string | undefined }): Vmm {
  if (o.vmm === 'firecracker') return new FirecrackerVmm({ binary: o.firecrackerBinary ?? 'firecracker' });
  return new QemuVmm(o.qemuBinary, o.ramDir);
}
