import { mkdtemp, mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RuntimeProbeInfo } from '../../core/types.js';
import { fakeContext, fakeHost } from './fake-host.test-support.js';
import { realHostSystem } from './host-system.js';
import { checkGuestFiles, checkKvm, checkVmm } from './microvm-checks.js';

let dir = '';
let guestDir = '';
let pkg = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prism-doctor-guest-'));
  guestDir = join(dir, 'guest');
  pkg = join(dir, 'pkg');
  await mkdir(guestDir);
  await mkdir(join(pkg, 'guest', 'agent'), { recursive: true });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** What scripts/prepare-guest.sh lays out, the initramfs built at `initramfsAt` (seconds). */
async function prepared(initramfsAt: number) {
  await writeFile(join(guestDir, 'vmlinux'), Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  await writeFile(join(guestDir, 'manifest.json'), JSON.stringify({ kernel: 'vmlinux', kernelVersion: '6.1.0-56-cloud-amd64', pvh: true }));
  await writeFile(join(guestDir, 'initramfs.cpio'), 'cpio');
  await utimes(join(guestDir, 'manifest.json'), 1000, 1000);
  await utimes(join(guestDir, 'initramfs.cpio'), initramfsAt, initramfsAt);
}

const microvm = (o: Partial<RuntimeProbeInfo>): RuntimeProbeInfo => ({ name: 'microvm', usable: false, ...o });
const ctx = (o: Parameters<typeof fakeContext>[0] = {}) =>
  fakeContext({ sys: realHostSystem, packageRoot: pkg, ...o, flags: { guestDir, ...o.flags } });

describe('guest files check', () => {
  it('finds the kernel and initramfs as the microvm driver does', async () => {
    await prepared(2000);
    expect(await checkGuestFiles(ctx())).toMatchObject({ status: 'ok', detail: `kernel 6.1.0-56-cloud-amd64 (${join(guestDir, 'vmlinux')}), ${join(guestDir, 'initramfs.cpio')}` });
  });

  it('is stale, as prepare-guest.sh judges it, when the agent was built after the initramfs', async () => {
    await prepared(2000);
    await writeFile(join(pkg, 'guest', 'agent', 'prism-agent'), 'agent');
    await utimes(join(pkg, 'guest', 'agent', 'prism-agent'), 3000, 3000);
    const c = await checkGuestFiles(ctx());
    expect(c).toMatchObject({ status: 'warn', detail: expect.stringContaining(`older than ${join(pkg, 'guest/agent/prism-agent')}`) });
    expect(c.fix).toBe(`bash scripts/prepare-guest.sh ${guestDir}`);
  });

  it('fails when missing and microvm is asked for (warns otherwise), with the command that makes them', async () => {
    const c = await checkGuestFiles(ctx({ flags: { runtime: 'microvm' } }));
    expect(c).toMatchObject({ status: 'fail', detail: expect.stringContaining('microvm guest files missing'), fix: `bash scripts/prepare-guest.sh ${guestDir}` });
    expect(await checkGuestFiles(ctx({ flags: { runtime: 'oci' } }))).toMatchObject({ status: 'warn' });
  });
});

describe('kvm check', () => {
  const qemu = microvm({ details: { vmm: 'qemu', qemu: 'QEMU emulator version 7.2.22' } });

  it("gives the accelerator probe's verdict for the configured guest files", async () => {
    await prepared(2000);
    let asked = '';
    const kvm = await checkKvm(ctx({ runtimes: [qemu], accelerator: async (f) => ((asked = f.kernel), { accel: 'kvm', reason: 'kvm boots the guest' }) }));
    expect(kvm).toEqual({ name: 'kvm', status: 'ok', detail: 'kvm boots the guest' });
    expect(asked).toBe(join(guestDir, 'vmlinux'));
    const tcg = await checkKvm(ctx({ runtimes: [qemu], accelerator: async () => ({ accel: 'tcg', reason: 'kvm unusable: no sign of life within 8000 ms' }) }));
    expect(tcg).toMatchObject({ status: 'warn', detail: expect.stringMatching(/no sign of life.*TCG/), fix: expect.stringContaining('/dev/kvm') });
  });

  it('without guest files, says the boot test needs them (or that /dev/kvm does not even open)', async () => {
    const opens = fakeHost({ openError: async () => undefined });
    expect(await checkKvm(ctx({ sys: opens, runtimes: [qemu] }))).toMatchObject({ status: 'warn', detail: expect.stringContaining('needs the guest kernel'), fix: `bash scripts/prepare-guest.sh ${guestDir}` });
    expect(await checkKvm(ctx({ sys: fakeHost({ openError: async () => 'EACCES' }), runtimes: [qemu] }))).toMatchObject({ status: 'warn', detail: expect.stringContaining('/dev/kvm: EACCES') });
  });

  it('under Firecracker, which needs KVM, only opens /dev/kvm', async () => {
    const flags = { vmm: 'firecracker', runtime: 'microvm' };
    expect(await checkKvm(ctx({ flags, sys: fakeHost({ openError: async () => undefined }) }))).toMatchObject({ status: 'ok' });
    expect(await checkKvm(ctx({ flags, sys: fakeHost({ openError: async () => 'ENOENT' }) }))).toMatchObject({ status: 'fail' });
  });
});

describe('vmm check', () => {
  it("shows QEMU's version from the microvm probe, or why it does not run", async () => {
    expect(await checkVmm(ctx({ runtimes: [microvm({ details: { vmm: 'qemu', qemu: 'QEMU emulator version 7.2.22' } })] }))).toMatchObject({ status: 'ok', detail: 'QEMU emulator version 7.2.22' });
    const missing = microvm({ reason: 'spawn qemu-system-x86_64 ENOENT' });
    expect(await checkVmm(ctx({ runtimes: [missing], flags: { runtime: 'microvm' } }))).toMatchObject({ status: 'fail', fix: 'apt-get install qemu-system-x86' });
    expect(await checkVmm(ctx({ runtimes: [missing] }))).toMatchObject({ status: 'warn' });
  });

  it('warns that Firecracker is untested even when it runs', async () => {
    const fc = microvm({ details: { vmm: 'firecracker (UNTESTED ...)', firecracker: 'Firecracker v1.7.0' } });
    expect(await checkVmm(ctx({ runtimes: [fc], flags: { vmm: 'firecracker' } }))).toMatchObject({ status: 'warn', detail: expect.stringContaining('UNTESTED'), fix: expect.stringContaining('--vmm qemu') });
  });
});
