import { describe, expect, it } from 'vitest';
import { fakeContext, fakeHost } from './fake-host.test-support.js';
import { checkLoop, checkNftables, checkOverlay, checkVeth } from './kernel-checks.js';

const loaded = (name: string) => ({ [`/sys/module/${name}`]: { kind: 'dir' as const, mtimeMs: 0 } });

describe('overlayfs check', () => {
  it('is ok when the kernel lists overlay', async () => {
    const sys = fakeHost({ files: { '/proc/filesystems': 'nodev\tsysfs\n\text4\nnodev\toverlay\n' } });
    expect(await checkOverlay(fakeContext({ sys }))).toMatchObject({ status: 'ok' });
  });

  it('is ok when overlay is a module not loaded yet (the oci probe loads it)', async () => {
    const sys = fakeHost({ files: { '/proc/filesystems': '\text4\n' }, commands: { 'modprobe -n -q overlay': {} } });
    expect(await checkOverlay(fakeContext({ sys }))).toMatchObject({ status: 'ok', detail: expect.stringContaining('module') });
  });

  it('fails without overlay when oci is asked for, warns otherwise', async () => {
    const sys = fakeHost({ files: { '/proc/filesystems': '\text4\n' }, commands: { 'modprobe -n -q overlay': { code: 1 } } });
    expect(await checkOverlay(fakeContext({ sys, flags: { runtime: 'oci' } }))).toMatchObject({ status: 'fail', fix: expect.stringContaining('CONFIG_OVERLAY_FS') });
    expect(await checkOverlay(fakeContext({ sys, flags: { runtime: 'auto' } }))).toMatchObject({ status: 'warn' });
  });
});

describe('loop devices check', () => {
  it('is ok with /dev/loop-control, else fails for oci with the fix that fits', async () => {
    const ok = fakeHost({ stats: { '/dev/loop-control': { kind: 'char', mtimeMs: 0 } } });
    expect(await checkLoop(fakeContext({ sys: ok }))).toMatchObject({ status: 'ok' });
    const module = fakeHost({ commands: { 'modprobe -n -q loop': {} } });
    expect(await checkLoop(fakeContext({ sys: module, flags: { runtime: 'oci' } }))).toMatchObject({ status: 'fail', fix: 'modprobe loop' });
    const none = fakeHost();
    expect(await checkLoop(fakeContext({ sys: none, flags: { runtime: 'microvm' } }))).toMatchObject({ status: 'warn', fix: expect.stringContaining('--device') });
  });
});

describe('veth check', () => {
  it('as root, makes a pair in a throwaway namespace and always deletes the namespace', async () => {
    const ns = `prism-doctor-${process.pid}`;
    const ok = fakeHost({ commands: { [`ip netns add ${ns}`]: {}, [`ip -n ${ns} link add pd0 type veth peer name pd1`]: {}, [`ip netns del ${ns}`]: {} } });
    expect(await checkVeth(fakeContext({ sys: ok }))).toMatchObject({ status: 'ok' });
    expect(ok.ran.at(-1)).toBe(`ip netns del ${ns}`);
    const noVeth = fakeHost({
      commands: { [`ip netns add ${ns}`]: {}, [`ip -n ${ns} link add pd0 type veth peer name pd1`]: { code: 2, stderr: 'Error: Unknown device type.\n' }, [`ip netns del ${ns}`]: {} },
    });
    expect(await checkVeth(fakeContext({ sys: noVeth }))).toMatchObject({ status: 'warn', detail: 'cannot make a veth pair: Error: Unknown device type.', fix: expect.stringContaining('modprobe veth') });
    expect(noVeth.ran.at(-1)).toBe(`ip netns del ${ns}`);
  });

  it('warns (never fails: only networked sandboxes need it) when ip is missing', async () => {
    expect(await checkVeth(fakeContext({ sys: fakeHost(), flags: { runtime: 'oci' } }))).toMatchObject({ status: 'warn', fix: 'apt-get install iproute2' });
  });

  it('without root, only looks for the module', async () => {
    expect(await checkVeth(fakeContext({ sys: fakeHost({ uid: () => 1000, stats: loaded('veth') }) }))).toMatchObject({ status: 'ok', detail: expect.stringContaining('veth module loaded') });
    const sys = fakeHost({ uid: () => 1000 });
    expect(await checkVeth(fakeContext({ sys }))).toMatchObject({ status: 'warn' });
    expect(sys.ran.some((c) => c.startsWith('ip '))).toBe(false);
  });
});

describe('nftables check', () => {
  const version = { 'nft --version': { stdout: 'nftables v1.0.6 (Lester Gooch #5)\n' } };

  it('is ok when nft runs and the kernel answers it', async () => {
    const sys = fakeHost({ commands: { ...version, 'nft list tables': {} } });
    expect(await checkNftables(fakeContext({ sys }))).toEqual({ name: 'nftables', status: 'ok', detail: "nftables v1.0.6 (Lester Gooch #5); the kernel's nf_tables answers" });
  });

  it('warns with the install command when nft is missing, and with modprobe when the kernel refuses', async () => {
    expect(await checkNftables(fakeContext({ sys: fakeHost() }))).toMatchObject({ status: 'warn', detail: expect.stringContaining('ENOENT'), fix: 'apt-get install nftables' });
    const sys = fakeHost({ commands: { ...version, 'nft list tables': { code: 1, stderr: 'Error: Could not process rule: Protocol not supported\n' } } });
    expect(await checkNftables(fakeContext({ sys, flags: { runtime: 'oci' } }))).toMatchObject({ status: 'warn', detail: expect.stringContaining('Protocol not supported'), fix: expect.stringContaining('modprobe nf_tables') });
  });

  it('without root, looks for the module instead of asking the kernel', async () => {
    const sys = fakeHost({ uid: () => 1000, commands: { ...version, 'modprobe -n -q nf_tables': {} } });
    expect(await checkNftables(fakeContext({ sys }))).toMatchObject({ status: 'ok', detail: expect.stringContaining('nf_tables module available') });
    expect(sys.ran).not.toContain('nft list tables');
  });
});
