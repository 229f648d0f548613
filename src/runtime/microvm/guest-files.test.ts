import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isPrismError } from '../../core/errors.js';
import { BASE_CMDLINE, defaultCmdline, locateGuestFiles, tcgKernelPresets } from './guest-files.js';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prism-guest-files-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const ELF = Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);

async function prepared(manifest: object = { kernel: 'vmlinux', kernelVersion: '6.1.0-56-cloud-amd64', pvh: true }) {
  await writeFile(join(dir, 'vmlinux'), ELF);
  await writeFile(join(dir, 'initramfs.cpio'), 'cpio');
  await writeFile(join(dir, 'kernel-version'), '6.1.0-56-cloud-amd64\n');
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
}

describe('locateGuestFiles', () => {
  it('finds what prepare-guest.sh laid out', async () => {
    await prepared();
    expect(await locateGuestFiles(dir)).toEqual({
      kernel: join(dir, 'vmlinux'),
      initramfs: join(dir, 'initramfs.cpio'),
      kernelVersion: '6.1.0-56-cloud-amd64',
      pvh: true,
    });
  });

  it('follows the manifest to a bzImage fallback', async () => {
    await prepared({ kernel: 'vmlinuz', kernelVersion: 'x', pvh: false });
    await writeFile(join(dir, 'vmlinuz'), 'MZ bzImage');
    const g = await locateGuestFiles(dir);
    expect(g.kernel).toBe(join(dir, 'vmlinuz'));
    expect(g.pvh).toBe(false);
  });

  it('fails with FAILED_PRECONDITION and the fix when nothing is prepared', async () => {
    const e = await locateGuestFiles(join(dir, 'absent')).catch((x: unknown) => x);
    expect(isPrismError(e, 'FAILED_PRECONDITION')).toBe(true);
    expect((e as Error).message).toContain('run scripts/prepare-guest.sh');
    expect((e as Error).message).toContain('vmlinux');
  });

  it('says to build the agent when only the initramfs is missing', async () => {
    await prepared();
    await rm(join(dir, 'initramfs.cpio'));
    const e = await locateGuestFiles(dir).catch((x: unknown) => x);
    expect(isPrismError(e, 'FAILED_PRECONDITION')).toBe(true);
    expect((e as Error).message).toMatch(/initramfs.*guest\/agent.*run scripts\/prepare-guest\.sh/);
  });

  it('takes overrides and judges an overridden kernel by its bytes', async () => {
    await prepared();
    await mkdir(join(dir, 'other'));
    await writeFile(join(dir, 'other', 'bzImage'), 'MZ');
    await writeFile(join(dir, 'other', 'initrd'), 'x');
    const g = await locateGuestFiles(dir, { kernel: join(dir, 'other', 'bzImage'), initramfs: join(dir, 'other', 'initrd') });
    expect(g).toMatchObject({ kernel: join(dir, 'other', 'bzImage'), initramfs: join(dir, 'other', 'initrd'), pvh: false });
  });

  it('rejects a damaged manifest with the way out', async () => {
    await prepared();
    await writeFile(join(dir, 'manifest.json'), '{"kernel": 3');
    const e = await locateGuestFiles(dir).catch((x: unknown) => x);
    expect(isPrismError(e, 'FAILED_PRECONDITION')).toBe(true);
    expect((e as Error).message).toContain('--force');
  });
});

describe('tcgKernelPresets', () => {
  it('computes tsc_early_khz and lpj = kHz * 1000 / HZ from cpu MHz', async () => {
    await writeFile(join(dir, 'cpuinfo'), 'processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\ncpu MHz\t\t: 2100.000\n');
    const p = await tcgKernelPresets({ cpuinfoPath: join(dir, 'cpuinfo'), tscKhzPath: join(dir, 'none') });
    expect(p).toEqual(['tsc_early_khz=2100000', 'lpj=8400000']);
  });

  it('prefers the kernel-exported TSC rate', async () => {
    await writeFile(join(dir, 'cpuinfo'), 'cpu MHz\t\t: 800.000\n');
    await writeFile(join(dir, 'tsc'), '2999999\n');
    const p = await tcgKernelPresets({ cpuinfoPath: join(dir, 'cpuinfo'), tscKhzPath: join(dir, 'tsc'), hz: 1000 });
    expect(p).toEqual(['tsc_early_khz=2999999', 'lpj=2999999']);
  });

  it('returns nothing when the host rate is unknown', async () => {
    await writeFile(join(dir, 'cpuinfo'), 'processor\t: 0\nBogoMIPS\t: 50.00\n');
    expect(await tcgKernelPresets({ cpuinfoPath: join(dir, 'cpuinfo'), tscKhzPath: join(dir, 'none') })).toEqual([]);
  });

  it('reads this host in the documented format', async () => {
    for (const a of await tcgKernelPresets()) expect(a).toMatch(/^(tsc_early_khz|lpj)=\d+$/);
  });
});

describe('defaultCmdline', () => {
  const presets = ['tsc_early_khz=2100000', 'lpj=8400000'];

  it('adds the TCG presets only under TCG', async () => {
    expect(await defaultCmdline({ tcg: true, tcgPresets: presets })).toBe([...BASE_CMDLINE, ...presets].join(' '));
    expect(await defaultCmdline({ tcg: false })).toBe(BASE_CMDLINE.join(' '));
  });

  it('keeps ACPI on, the console on ttyS0 and PCI off', async () => {
    const words = (await defaultCmdline({ tcg: false })).split(' ');
    expect(words).toContain('console=ttyS0');
    expect(words).toContain('pci=off');
    expect(words.some((w) => w.startsWith('acpi='))).toBe(false);
  });

  it('passes nokaslr only to a bzImage', async () => {
    expect((await defaultCmdline({ tcg: false })).split(' ')).not.toContain('nokaslr');
    expect((await defaultCmdline({ tcg: false, pvh: false })).split(' ')).toContain('nokaslr');
  });

  it('sets the hostname and appends extra parameters last', async () => {
    const c = await defaultCmdline({ tcg: true, tcgPresets: presets, hostname: 'sb-1.example', extra: ['loglevel=7'] });
    expect(c.endsWith('lpj=8400000 hostname=sb-1.example loglevel=7')).toBe(true);
  });

  it('refuses input that would inject other parameters', async () => {
    for (const bad of [{ hostname: 'a b' }, { hostname: 'x init=/bin/sh' }, { hostname: '-x' }, { extra: ['a b'] }, { extra: [''] }]) {
      const e = await defaultCmdline({ tcg: false, ...bad }).catch((x: unknown) => x);
      expect(isPrismError(e, 'INVALID_ARGUMENT')).toBe(true);
    }
  });
});
