import { describe, expect, it } from 'vitest';
import { PrismError } from '../../../core/errors.js';
import {
  action, bootRequests, bootSource, drive, driveUpdate, firecrackerBootArgs, machineConfig, snapshotCreate, snapshotLoad, vmState, vsock,
} from './firecracker-config.js';
import { buildJailerArgs, jailRoot } from './jailer-args.js';

const json = (r: { body: object }) => JSON.stringify(r.body);

describe('Firecracker request builders', () => {
  it('machine config: vcpus, memory, SMT off', () => {
    const r = machineConfig({ vcpus: 2, memoryMb: 640 });
    expect([r.method, r.path]).toEqual(['PUT', '/machine-config']);
    expect(json(r)).toBe('{"vcpu_count":2,"mem_size_mib":640,"smt":false}');
    expect(() => machineConfig({ vcpus: 33, memoryMb: 640 })).toThrow(PrismError);
    expect(() => machineConfig({ vcpus: 0, memoryMb: 640 })).toThrow(/1\.\.32/);
    expect(() => machineConfig({ vcpus: 1, memoryMb: 16 })).toThrow(/32 MiB/);
  });

  it('boot source: vmlinux, initramfs and a command line with what Firecracker needs', () => {
    const r = bootSource({ kernel: '/k/vmlinux', initramfs: '/k/initramfs.cpio', cmdline: 'console=ttyS0 quiet i8042.nokbd panic=-1' });
    expect([r.method, r.path]).toEqual(['PUT', '/boot-source']);
    expect(json(r)).toBe('{"kernel_image_path":"/k/vmlinux","initrd_path":"/k/initramfs.cpio","boot_args":"console=ttyS0 quiet panic=-1 reboot=k pci=off"}');
    expect(() => bootSource({ kernel: 'vmlinux', initramfs: '/i', cmdline: '' })).toThrow(/absolute/);
  });

  it('boot args: added when missing, kept when set', () => {
    expect(firecrackerBootArgs('')).toBe('console=ttyS0 reboot=k panic=1 pci=off');
    expect(firecrackerBootArgs('  console=hvc0   reboot=t ')).toBe('console=hvc0 reboot=t panic=1 pci=off');
  });

  it('drives: image read-only, rw writable, neither the root device', () => {
    expect(drive('image', '/t/image.ext4')).toEqual({
      method: 'PUT', path: '/drives/image', body: { drive_id: 'image', path_on_host: '/t/image.ext4', is_root_device: false, is_read_only: true },
    });
    expect(json(drive('rw', '/t/rw.ext4'))).toBe('{"drive_id":"rw","path_on_host":"/t/rw.ext4","is_root_device":false,"is_read_only":false}');
    expect(driveUpdate('rw', '/t2/rw.ext4')).toEqual({ method: 'PATCH', path: '/drives/rw', body: { drive_id: 'rw', path_on_host: '/t2/rw.ext4' } });
  });

  it('vsock, actions and VM state', () => {
    expect(vsock('/t/vsock.sock')).toEqual({ method: 'PUT', path: '/vsock', body: { guest_cid: 3, uds_path: '/t/vsock.sock' } });
    expect(() => vsock('/t/v.sock', 2)).toThrow(/CID/);
    expect(action('InstanceStart')).toEqual({ method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } });
    expect(json(action('SendCtrlAltDel'))).toBe('{"action_type":"SendCtrlAltDel"}');
    expect(vmState('Paused')).toEqual({ method: 'PATCH', path: '/vm', body: { state: 'Paused' } });
    expect(json(vmState('Resumed'))).toBe('{"state":"Resumed"}');
  });

  it('snapshot create and load', () => {
    expect(snapshotCreate('/s/vm.state', '/s/vm.mem')).toEqual({
      method: 'PUT', path: '/snapshot/create', body: { snapshot_type: 'Full', snapshot_path: '/s/vm.state', mem_file_path: '/s/vm.mem' },
    });
    const load = snapshotLoad({ statePath: '/s/vm.state', memPath: '/s/vm.mem', resume: true });
    expect([load.method, load.path]).toEqual(['PUT', '/snapshot/load']);
    expect(json(load)).toBe('{"snapshot_path":"/s/vm.state","mem_backend":{"backend_type":"File","backend_path":"/s/vm.mem"},"resume_vm":true}');
    expect(snapshotLoad({ statePath: '/s/a', memPath: '/s/b', resume: false, vsockUds: '/t/v.sock' }).body).toEqual({
      snapshot_path: '/s/a', mem_backend: { backend_type: 'File', backend_path: '/s/b' }, resume_vm: false, vsock_override: { uds_path: '/t/v.sock' },
    });
  });

  it('a cold boot configures, then starts', () => {
    const rs = bootRequests({
      kernel: '/k/vmlinux', initramfs: '/k/i.cpio', cmdline: 'console=ttyS0', memoryMb: 256, vcpus: 1,
      imageDisk: '/t/image.ext4', writableDisk: '/t/rw.ext4', vsockUds: '/t/v.sock',
    });
    expect(rs.map((r) => `${r.method} ${r.path}`)).toEqual([
      'PUT /machine-config', 'PUT /boot-source', 'PUT /drives/image', 'PUT /drives/rw', 'PUT /vsock', 'PUT /actions',
    ]);
    expect(rs.at(-1)!.body).toEqual({ action_type: 'InstanceStart' });
  });
});

describe('jailer argv', () => {
  const base = { jailer: '/usr/bin/jailer', firecracker: '/usr/bin/firecracker', id: 'task-1', uid: 1000, gid: 1000, apiSock: '/run/fc.sock' };

  it('jailer options, then Firecracker arguments after --', () => {
    expect(buildJailerArgs(base)).toEqual({
      file: '/usr/bin/jailer',
      args: ['--id', 'task-1', '--exec-file', '/usr/bin/firecracker', '--uid', '1000', '--gid', '1000', '--', '--api-sock', '/run/fc.sock'],
    });
    expect(buildJailerArgs({ ...base, chrootBaseDir: '/var/lib/prism/jail', cgroupVersion: 2, newPidNs: true }).args).toEqual([
      '--id', 'task-1', '--exec-file', '/usr/bin/firecracker', '--uid', '1000', '--gid', '1000',
      '--chroot-base-dir', '/var/lib/prism/jail', '--cgroup-version', '2', '--new-pid-ns', '--', '--api-sock', '/run/fc.sock',
    ]);
  });

  it('refuses what the jailer would refuse', () => {
    expect(() => buildJailerArgs({ ...base, id: 'a/b' })).toThrow(/jailer id/);
    expect(() => buildJailerArgs({ ...base, id: 'x'.repeat(65) })).toThrow(/jailer id/);
    expect(() => buildJailerArgs({ ...base, firecracker: '/usr/bin/fc' })).toThrow(/contains "firecracker"/);
    expect(() => buildJailerArgs({ ...base, uid: -1 })).toThrow(/uid/);
  });

  it('the jail root on the host', () => {
    expect(jailRoot(base)).toBe('/srv/jailer/firecracker/task-1/root');
    expect(jailRoot({ ...base, firecracker: '/opt/firecracker-v1.9', chrootBaseDir: '/j' })).toBe('/j/firecracker-v1.9/task-1/root');
  });
});
