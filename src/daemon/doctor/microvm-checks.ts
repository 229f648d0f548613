import { join } from 'node:path';
import { asPrismError } from '../../core/errors.js';
import { locateGuestFiles, type GuestFiles } from '../../runtime/microvm/guest-files.js';
import { DEFAULT_GUEST_DIR } from '../config.js';
import { DOCS, probeOf, severity, type Check, type DoctorContext } from './check.js';

/** The VMM binary, from the microvm driver's probe (which runs `<vmm> --version` first). */
export async function checkVmm(ctx: DoctorContext): Promise<Check> {
  const p = probeOf(ctx, 'microvm');
  if (ctx.cfg.vmm === 'firecracker') {
    if (p.details?.firecracker) {
      return { name: 'vmm', status: 'warn', detail: `${p.details.firecracker} (--vmm firecracker: UNTESTED, never run against a real Firecracker)`, fix: 'use --vmm qemu (the default) unless you are testing Firecracker (docs/runtimes.md)' };
    }
    return { name: 'vmm', status: severity(ctx.cfg, ['microvm']), detail: p.reason ?? 'Firecracker does not run', fix: 'install Firecracker or give --firecracker-bin FILE; or use --vmm qemu' };
  }
  if (p.details?.qemu) return { name: 'vmm', status: 'ok', detail: p.details.qemu };
  return { name: 'vmm', status: severity(ctx.cfg, ['microvm']), detail: p.reason ?? 'QEMU does not run', fix: 'apt-get install qemu-system-x86' };
}

export function prepareGuestCommand(guestDir: string): string {
  return guestDir === DEFAULT_GUEST_DIR ? 'bash scripts/prepare-guest.sh' : `bash scripts/prepare-guest.sh ${guestDir}`;
}

/**
 * The guest kernel and initramfs, found as the microvm driver finds them, and stale as
 * scripts/prepare-guest.sh judges it: an initramfs older than the agent, prism-init's musl build or
 * the kernel's manifest would boot old code.
 */
export async function checkGuestFiles(ctx: DoctorContext): Promise<Check> {
  const { cfg, sys } = ctx;
  let files: GuestFiles;
  try {
    files = await locateGuestFiles(cfg.guestDir, cfg.kernel ? { kernel: cfg.kernel } : {});
  } catch (e) {
    return { name: 'guest files', status: severity(cfg, ['microvm']), detail: asPrismError(e).message, fix: prepareGuestCommand(cfg.guestDir) };
  }
  const initramfs = await sys.stat(files.initramfs);
  const inputs = [join(cfg.guestDir, 'manifest.json'), join(ctx.packageRoot, 'guest/agent/prism-agent'), join(ctx.packageRoot, 'guest/init/prism-init-musl')];
  const newer: string[] = [];
  for (const f of inputs) {
    const st = await sys.stat(f);
    if (st && initramfs && st.mtimeMs > initramfs.mtimeMs) newer.push(f);
  }
  const found = `kernel ${files.kernelVersion} (${files.kernel}), ${files.initramfs}`;
  if (newer.length === 0) return { name: 'guest files', status: 'ok', detail: found };
  return {
    name: 'guest files',
    status: 'warn',
    detail: `${found} is stale: older than ${newer.join(', ')}, so microVMs would boot an old agent`,
    fix: prepareGuestCommand(cfg.guestDir),
  };
}

const KVM_FIX = `load kvm_intel or kvm_amd and give prismd /dev/kvm (in a VM: enable nested virtualisation; ${DOCS}#kvm)`;

/**
 * Whether microVMs get KVM: the microvm driver's verdict (accel-probe.ts: a guest must boot under KVM,
 * /dev/kvm opening is not enough), or for Firecracker, which runs on KVM only, /dev/kvm itself.
 */
export async function checkKvm(ctx: DoctorContext): Promise<Check> {
  const { cfg, sys } = ctx;
  const tcg = 'microVMs run under TCG (software emulation: seconds per boot), and --runtime auto picks oci';
  const kvmOpens = async () => sys.openError('/dev/kvm');
  if (cfg.vmm === 'firecracker') {
    const err = await kvmOpens();
    if (!err) return { name: 'kvm', status: 'ok', detail: '/dev/kvm opens (Firecracker runs on KVM only)' };
    return { name: 'kvm', status: severity(cfg, ['microvm']), detail: `/dev/kvm: ${err}: Firecracker cannot run without KVM`, fix: KVM_FIX };
  }
  let files: GuestFiles | undefined;
  try {
    files = await locateGuestFiles(cfg.guestDir, cfg.kernel ? { kernel: cfg.kernel } : {});
  } catch {
    files = undefined;
  }
  const qemu = probeOf(ctx, 'microvm').details?.qemu;
  if (!files || !qemu) {
    const err = await kvmOpens();
    if (err) return { name: 'kvm', status: 'warn', detail: `kvm unusable: /dev/kvm: ${err}; ${tcg}`, fix: KVM_FIX };
    const missing = !files ? `the guest kernel (${prepareGuestCommand(cfg.guestDir)})` : 'QEMU (apt-get install qemu-system-x86)';
    return { name: 'kvm', status: 'warn', detail: `/dev/kvm opens, but whether KVM boots a guest is not known: the boot test needs ${missing}`, fix: !files ? prepareGuestCommand(cfg.guestDir) : 'apt-get install qemu-system-x86' };
  }
  try {
    const v = await ctx.accelerator(files);
    if (v.accel === 'kvm') return { name: 'kvm', status: 'ok', detail: v.reason };
    return { name: 'kvm', status: 'warn', detail: `${v.reason}; ${tcg}`, fix: KVM_FIX };
  } catch (e) {
    return { name: 'kvm', status: 'warn', detail: `the KVM boot test failed: ${asPrismError(e).message}`, fix: KVM_FIX };
  }
}
