import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError } from '../../core/errors.js';

/** What a microVM boots, as laid out by scripts/prepare-guest.sh. */
export interface GuestFiles {
  kernel: string;
  initramfs: string;
  kernelVersion: string;
  /** An ELF with a PVH entry note (booted directly, no decompressor); false for a bzImage. */
  pvh: boolean;
}

export const DEFAULT_GUEST_DIR = '/var/lib/prism/guest';

/**
 * Finds the kernel and initramfs in `dir` (overrides win). Fails with FAILED_PRECONDITION naming
 * what is missing and how to make it; never builds anything itself.
 */
export async function locateGuestFiles(dir: string, overrides: { kernel?: string; initramfs?: string } = {}): Promise<GuestFiles> {
  const manifest = await readManifest(dir);
  const kernel = overrides.kernel ?? join(dir, manifest?.kernel ?? 'vmlinux');
  const initramfs = overrides.initramfs ?? join(dir, 'initramfs.cpio');
  const missing: string[] = [];
  if (!(await isFile(kernel))) missing.push(`kernel ${kernel}`);
  if (!(await isFile(initramfs))) missing.push(`initramfs ${initramfs}`);
  if (missing.length > 0) {
    const hint = missing.length === 1 && missing[0]!.startsWith('initramfs') && !overrides.initramfs
      ? 'build the agent (make -C guest/agent), then run scripts/prepare-guest.sh'
      : 'run scripts/prepare-guest.sh';
    throw new PrismError('FAILED_PRECONDITION', `microvm guest files missing: ${missing.join(', ')}; ${hint}`);
  }
  const kernelVersion = (await readFile(join(dir, 'kernel-version'), 'utf8').catch(() => '')).trim()
    || manifest?.kernelVersion || 'unknown';
  // The manifest speaks for its own kernel; an override is judged by its bytes (QEMU only boots an
  // ELF kernel through its PVH note, so an ELF there is taken as PVH).
  const pvh = overrides.kernel === undefined && manifest ? manifest.pvh : await isElf(kernel);
  return { kernel, initramfs, kernelVersion, pvh };
}

interface Manifest {
  kernel: string;
  kernelVersion: string;
  pvh: boolean;
}

async function readManifest(dir: string): Promise<Manifest | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, 'manifest.json'), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const m = JSON.parse(text) as Partial<Manifest>;
    if (typeof m.kernel !== 'string' || typeof m.pvh !== 'boolean' || m.kernel.includes('/')) throw new Error('unexpected fields');
    return { kernel: m.kernel, pvh: m.pvh, kernelVersion: m.kernelVersion ?? 'unknown' };
  } catch (e) {
    throw new PrismError('FAILED_PRECONDITION', `${join(dir, 'manifest.json')} is damaged; run scripts/prepare-guest.sh --force`, { cause: e });
  }
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isFile(), () => false);
}

async function isElf(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const { buffer, bytesRead } = await fh.read(Buffer.alloc(4), 0, 4, 0);
    return bytesRead === 4 && buffer.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } finally {
    await fh.close();
  }
}

/** Debian's cloud kernel is built with CONFIG_HZ=250 (its /boot/config-*). */
export const GUEST_KERNEL_HZ = 250;

/**
 * Kernel parameters that skip TSC and delay-loop calibration. Under TCG the guest's TSC runs at the
 * host's TSC rate (QEMU reads the host counter), and calibrating it against the emulated PIT hangs
 * in 7-10% of boots; presetting both removes the hang. Use only under TCG: under a hardware
 * hypervisor the kernel gets the frequency from the hypervisor.
 * Returns [] when the host's TSC rate cannot be read (not x86): the guest then calibrates.
 */
export async function tcgKernelPresets(opts: { hz?: number; cpuinfoPath?: string; tscKhzPath?: string } = {}): Promise<string[]> {
  const khz = await hostTscKhz(opts.tscKhzPath ?? '/sys/devices/system/cpu/cpu0/tsc_freq_khz', opts.cpuinfoPath ?? '/proc/cpuinfo');
  if (khz === undefined) return [];
  // The kernel's own formula (arch/x86/kernel/tsc.c): lpj = tsc_khz * 1000 / HZ.
  const lpj = Math.floor((khz * 1000) / (opts.hz ?? GUEST_KERNEL_HZ));
  return [`tsc_early_khz=${khz}`, `lpj=${lpj}`];
}

async function hostTscKhz(tscKhzPath: string, cpuinfoPath: string): Promise<number | undefined> {
  // Some kernels export the calibrated TSC rate; prefer it over cpu MHz, which may be a scaled clock.
  const exact = Number.parseInt(await readFile(tscKhzPath, 'utf8').catch(() => ''), 10);
  if (Number.isInteger(exact) && exact > 0) return exact;
  const cpuinfo = await readFile(cpuinfoPath, 'utf8').catch(() => '');
  const mhz = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(cpuinfo)?.[1];
  const khz = mhz === undefined ? NaN : Math.round(Number(mhz) * 1000);
  return khz > 0 ? khz : undefined;
}

/**
 * The command line the microvm guest boots with, measured at 1.45-1.8 s to /init under TCG:
 * no PCI (microvm has virtio-mmio), one 8250 UART, no keyboard probe, no calibration or self-tests.
 * ACPI stays on: it is how microvm describes its virtio-mmio devices to this kernel, which lacks
 * VIRTIO_MMIO_CMDLINE_DEVICES (and `acpi=off` stalls the boot).
 */
export const BASE_CMDLINE = [
  'console=ttyS0', 'quiet', 'pci=off', 'i8042.noaux', 'i8042.nokbd', 'i8042.nopnp', '8250.nr_uarts=1',
  'mitigations=off', 'tsc=reliable', 'no_timer_check', 'random.trust_cpu=on', 'cryptomgr.notests',
  'rcupdate.rcu_expedited=1', 'panic=-1', 'audit=0', 'nowatchdog',
] as const;

const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** INVALID_ARGUMENT unless `name` is a valid host name (RFC 1123 labels, at most 64 bytes). */
export function checkHostname(name: string): string {
  if (name.length > 64 || !HOSTNAME.test(name)) throw new PrismError('INVALID_ARGUMENT', `hostname ${JSON.stringify(name)} is not a valid host name`);
  return name;
}

export interface CmdlineOptions {
  tcg: boolean;
  /**
   * Set by the kernel itself (`hostname=`, Linux >= 5.19) before init runs. The driver leaves it
   * out so every VM of a shape boots the same command line (template snapshots); the agent sets the
   * task's hostname on `M` instead.
   */
  hostname?: string;
  extra?: string[];
  /**
   * False for a bzImage: its decompressor randomizes the load address unless told `nokaslr`.
   * A PVH vmlinux has no decompressor and the kernel proper reports `nokaslr` as unknown (and
   * hands it to init as an argument), so it is left out there. Default true.
   */
  pvh?: boolean;
  /** Presets to use under TCG; default {@link tcgKernelPresets} of this host. */
  tcgPresets?: string[];
}

/** The kernel command line (the string for QEMU's -append). */
export async function defaultCmdline(opts: CmdlineOptions): Promise<string> {
  const args: string[] = [...BASE_CMDLINE];
  if (opts.pvh === false) args.push('nokaslr');
  if (opts.tcg) args.push(...(opts.tcgPresets ?? (await tcgKernelPresets())));
  if (opts.hostname !== undefined) args.push(`hostname=${checkHostname(opts.hostname)}`);
  for (const a of opts.extra ?? []) {
    // One word each: whitespace would split into parameters the caller did not ask for.
    if (a === '' || /\s/.test(a)) throw new PrismError('INVALID_ARGUMENT', `kernel parameter ${JSON.stringify(a)} must be one non-empty word`);
    args.push(a);
  }
  return args.join(' ');
}
