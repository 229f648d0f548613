import { describe, expect, it } from 'vitest';
import { buildQemuArgs, type QemuVmConfig } from './qemu-args.js';

const base: QemuVmConfig = {
  accel: 'tcg', memoryMb: 256, cpus: 2, kernel: '/g/vmlinux', initramfs: '/g/initramfs.cpio', cmdline: 'console=ttyS0 quiet',
  imageDisk: '/c/img.ext4', writableDisk: '/t/rw.ext4', agentSocket: '/t/agent.sock', qmpSocket: '/t/qmp.sock',
  consoleLog: '/t/console.log', pidFile: '/t/qemu.pid',
};

const opt = (args: string[], name: string) => args.flatMap((a, i) => (a === name ? [args[i + 1]] : []));

describe('buildQemuArgs', () => {
  it('builds a microvm with ACPI, the two disks in order, the agent port and QMP, and no network', () => {
    const a = buildQemuArgs(base);
    expect(opt(a, '-M')).toEqual(['microvm,acpi=on']);
    expect(opt(a, '-accel')).toEqual(['tcg,tb-size=64']);
    expect(opt(a, '-cpu')).toEqual(['max']);
    expect(opt(a, '-m')).toEqual(['256M']);
    expect(opt(a, '-smp')).toEqual(['2']);
    for (const flag of ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot']) expect(a).toContain(flag);
    expect(opt(a, '-kernel')).toEqual(['/g/vmlinux']);
    expect(opt(a, '-initrd')).toEqual(['/g/initramfs.cpio']);
    expect(opt(a, '-append')).toEqual(['console=ttyS0 quiet']);
    expect(opt(a, '-serial')).toEqual(['file:/t/console.log']);
    expect(opt(a, '-pidfile')).toEqual(['/t/qemu.pid']);
    expect(opt(a, '-drive')).toEqual([
      'id=image,file=/c/img.ext4,format=raw,if=none,readonly=on',
      'id=rw,file=/t/rw.ext4,format=raw,if=none',
    ]);
    expect(opt(a, '-device')).toEqual([
      'virtio-blk-device,drive=image,serial=prism-image',
      'virtio-blk-device,drive=rw,serial=prism-rw',
      'virtio-serial-device,max_ports=2',
      'virtserialport,chardev=agent,name=prism.agent',
    ]);
    expect(opt(a, '-chardev')).toEqual(['socket,id=agent,path=/t/agent.sock,server=on,wait=off']);
    expect(opt(a, '-qmp')).toEqual(['unix:/t/qmp.sock,server=on,wait=off']);
    expect(a.join(' ')).not.toMatch(/netdev|virtio-net|-nic/);
  });

  it('attaches volumes as disks after the writable one, each with the serial the agent finds it by', () => {
    const a = buildQemuArgs({ ...base, volumes: [{ image: '/v/a/volume.ext4', readOnly: false }, { image: '/v/b/volume.ext4', readOnly: true }] });
    expect(opt(a, '-drive').slice(2)).toEqual([
      'id=vol0,file=/v/a/volume.ext4,format=raw,if=none',
      'id=vol1,file=/v/b/volume.ext4,format=raw,if=none,readonly=on',
    ]);
    expect(opt(a, '-device').slice(2, 4)).toEqual(['virtio-blk-device,drive=vol0,serial=prism-vol0', 'virtio-blk-device,drive=vol1,serial=prism-vol1']);
    expect(() => buildQemuArgs({ ...base, volumes: [{ image: '/v/a,b', readOnly: false }] })).toThrow(/not usable/);
  });

  it('uses the host CPU under KVM and leaves out what a probe VM lacks', () => {
    const a = buildQemuArgs({ ...base, accel: 'kvm', imageDisk: undefined, writableDisk: undefined, qmpSocket: undefined });
    expect(opt(a, '-accel')).toEqual(['kvm']);
    expect(opt(a, '-cpu')).toEqual(['host']);
    expect(opt(a, '-drive')).toEqual([]);
    expect(opt(a, '-qmp')).toEqual([]);
  });

  it('refuses paths QEMU would parse as options, and silly sizes', () => {
    expect(() => buildQemuArgs({ ...base, writableDisk: '/t/a,b.ext4' })).toThrow(/not usable/);
    expect(() => buildQemuArgs({ ...base, agentSocket: 'relative.sock' })).toThrow(/not usable/);
    expect(() => buildQemuArgs({ ...base, memoryMb: 8 })).toThrow(/memory/);
    expect(() => buildQemuArgs({ ...base, cpus: 0 })).toThrow(/cpus/);
  });

  it('restores with the same devices plus -incoming defer (the stream is given over QMP)', () => {
    const boot = buildQemuArgs(base);
    const restore = buildQemuArgs({ ...base, incoming: true });
    expect(restore.slice(0, boot.length)).toEqual(boot);
    expect(restore.slice(boot.length)).toEqual(['-incoming', 'defer']);
  });

  it('puts guest RAM in a shared file, or maps a memory image copy-on-write', () => {
    expect(buildQemuArgs(base).join(' ')).not.toMatch(/memory-backend/);
    const shared = buildQemuArgs({ ...base, memory: { path: '/dev/shm', shared: true } });
    expect(opt(shared, '-M')).toEqual(['microvm,acpi=on,memory-backend=mem']);
    expect(opt(shared, '-object')).toEqual(['memory-backend-file,id=mem,size=256M,mem-path=/dev/shm,share=on']);
    const cow = buildQemuArgs({ ...base, incoming: true, memory: { path: '/s/snapshots/x/mem', shared: false } });
    expect(opt(cow, '-object')).toEqual(['memory-backend-file,id=mem,size=256M,mem-path=/s/snapshots/x/mem,share=off']);
    expect(() => buildQemuArgs({ ...base, memory: { path: '/s/a,b', shared: false } })).toThrow(/not usable/);
  });

  it('has no network device unless given a NIC, which is virtio-net on the named tap with that MAC', () => {
    expect(buildQemuArgs(base).join(' ')).not.toMatch(/netdev|virtio-net/);
    const a = buildQemuArgs({ ...base, nic: { tap: 'tap0', mac: '42:10:91:21:3f:cf' } });
    expect(opt(a, '-netdev')).toEqual(['tap,id=net0,ifname=tap0,script=no,downscript=no']);
    expect(opt(a, '-device')).toContain('virtio-net-device,netdev=net0,mac=42:10:91:21:3f:cf');
    expect(() => buildQemuArgs({ ...base, nic: { tap: 'tap0,script=/x', mac: '42:10:91:21:3f:cf' } })).toThrow(/tap/);
    expect(() => buildQemuArgs({ ...base, nic: { tap: 'tap0', mac: '42:10:91:21:3f' } })).toThrow(/MAC/);
  });
});
