/**
 * Bare QEMU microvm boot: the baseline for the microvm runtime's benchmarks. Boots the prepared
 * guest kernel with a trivial /init (bench/trivial-init.c) that powers off at once, so the time is
 * QEMU start + kernel boot + QEMU exit, with the same machine, TCG presets and command line as the
 * runtime.
 *
 *   totalMs   spawn of qemu-system-x86_64 until it exits (the guest powered off)
 *   toInitMs  spawn until /init's first line on the serial console
 *
 * Usage: node dist/bench/qemu-bare-boot.js [runs]   (PRISM_GUEST_DIR picks the guest files;
 * needs musl-gcc and scripts/prepare-guest.sh done)
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_GUEST_DIR, defaultCmdline, locateGuestFiles } from '../src/runtime/microvm/guest-files.js';
import { writeInitramfs } from '../src/runtime/microvm/initramfs.js';
import { summarize } from './stats.js';

const RUNS = Number(process.argv[2] ?? 10);
const GUEST_DIR = process.env.PRISM_GUEST_DIR ?? DEFAULT_GUEST_DIR;
const MARKER = 'prism-trivial-init: reached /init';
const RUN_TIMEOUT_MS = 30_000;

/**
 * The machine, kept here rather than imported so the baseline stays fixed while the runtime's own
 * arguments evolve. Verified on QEMU 7.2 + Debian 6.1 cloud kernel under TCG:
 * - microvm's defaults (acpi=auto -> on, isa-serial=on, rtc=on, pit/pic on) boot; ACPI must stay on.
 * - rtc=off doubles the boot time (~3.5 s); x-option-roms=off and pit=off,pic=off also boot, with
 *   no difference beyond noise, so the defaults are kept.
 * - `-accel tcg`: /dev/kvm here is kvm_pvm, on which stock kernels die.
 */
function qemuArgs(kernel: string, initramfs: string, cmdline: string): string[] {
  return [
    '-M', 'microvm,accel=tcg', '-cpu', 'max', '-m', '256', '-smp', '1',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', kernel, '-initrd', initramfs, '-append', cmdline, '-serial', 'stdio',
  ];
}

interface Boot {
  totalMs: number;
  toInitMs: number;
}

function boot(args: string[]): Promise<Boot> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let toInitMs = NaN;
    const onData = (b: Buffer) => {
      out += b.toString();
      if (Number.isNaN(toInitMs) && out.includes(MARKER)) toInitMs = performance.now() - t0;
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    const timer = setTimeout(() => p.kill('SIGKILL'), RUN_TIMEOUT_MS);
    p.once('error', reject);
    p.once('exit', (code, signal) => {
      clearTimeout(timer);
      const totalMs = performance.now() - t0;
      if (code === 0 && !Number.isNaN(toInitMs)) resolve({ totalMs, toInitMs });
      else reject(new Error(`boot failed (exit ${code ?? signal}); console tail:\n${out.split('\n').slice(-15).join('\n')}`));
    });
  });
}

async function main() {
  const tmp = await mkdtemp(join(tmpdir(), 'prism-bare-boot-'));
  try {
    const init = join(tmp, 'init');
    await promisify(execFile)('musl-gcc', ['-static', '-Os', '-s', '-o', init, join(import.meta.dirname, '..', '..', 'bench', 'trivial-init.c')]);
    const initramfs = join(tmp, 'initramfs.cpio');
    await writeInitramfs(initramfs, [
      { path: 'dev', mode: 0o755, dir: true },
      { path: 'dev/console', mode: 0o600, charDevice: { major: 5, minor: 1 } },
      { path: 'init', mode: 0o755, data: await readFile(init) },
    ]);
    const guest = await locateGuestFiles(GUEST_DIR, { initramfs });
    const cmdline = await defaultCmdline({ tcg: true, pvh: guest.pvh });
    const args = qemuArgs(guest.kernel, initramfs, cmdline);
    const boots: Boot[] = [];
    const failures: string[] = [];
    for (let i = 0; i < RUNS; i++) {
      await boot(args).then((b) => boots.push(b), (e: Error) => failures.push(e.message));
    }
    for (const f of failures) console.error(f);
    if (boots.length === 0) throw new Error('no boot succeeded');
    const total = summarize(boots.map((b) => b.totalMs));
    console.log(JSON.stringify({
      benchmark: 'qemu-bare-boot',
      ...total,
      failures: failures.length,
      toInit: summarize(boots.map((b) => b.toInitMs)),
      kernel: { file: guest.kernel, version: guest.kernelVersion, pvh: guest.pvh },
      cmdline,
      qemuArgs: ['qemu-system-x86_64', ...args],
    }, null, 2));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

await main();
