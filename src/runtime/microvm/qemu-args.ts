import { PrismError } from '../../core/errors.js';

export type Accelerator = 'kvm' | 'tcg';

export interface QemuVmConfig {
  accel: Accelerator;
  memoryMb: number;
  cpus: number;
  kernel: string;
  initramfs: string;
  cmdline: string;
  /** The image's read-only ext4 disk: the guest's /dev/vda. Absent for a probe VM. */
  imageDisk?: string;
  /** The task's writable ext4 disk: the guest's /dev/vdb. Absent for a probe VM. */
  writableDisk?: string;
  /** Volume images, one disk each with serial `prism-vol<index>` (volumeSerial), after the two above. */
  volumes?: Array<{ image: string; readOnly: boolean }>;
  /** Host side of the agent's virtio-serial port (a unix socket QEMU listens on). */
  agentSocket: string;
  /** QMP unix socket; absent for a probe VM. */
  qmpSocket?: string;
  consoleLog: string;
  pidFile: string;
  /**
   * Restore a migration stream instead of booting: QEMU starts with `-incoming defer` and is given the
   * stream over QMP (vm-snapshot.ts resumeIncoming: `exec:cat FILE`, QEMU 7.2 has no `file:` URI), so
   * that migration capabilities can be set first. Every other argument must match the saved VM's shape.
   */
  incoming?: boolean;
  /**
   * Where guest RAM lives (absent: anonymous memory, QEMU's default): `mem-path` of a file memory
   * backend (qemu-vmm.ts chooses). `shared`: mapped shared, the file is the RAM (a directory: QEMU
   * creates a file there and unlinks it at once); not shared: a memory image mapped copy-on-write.
   */
  memory?: { path: string; shared: boolean };
  /** A virtio-net NIC on this tap (opened by name: QEMU runs in the tap's namespace), with this MAC. */
  nic?: { tap: string; mac: string };
}

/**
 * Characters QEMU's option parser treats specially: ',' separates properties (it would have to be
 * doubled) and '=' within a path is ambiguous; paths are ours, so refusing them is simpler than escaping.
 */
function checkPath(what: string, p: string): string {
  if (!p.startsWith('/') || /[,\n\0]/.test(p)) throw new PrismError('INVALID_ARGUMENT', `${what} path not usable on a QEMU command line: ${p}`);
  return p;
}

/**
 * The qemu-system-x86_64 argv of one microVM. The `microvm` machine has no PCI and no firmware: the
 * kernel is loaded directly and devices are virtio-mmio. ACPI stays on because the guest kernel
 * discovers the virtio-mmio transports through the ACPI tables (it has no virtio_mmio.device= list).
 * There is no network device unless `nic` is given (sandboxes with a network, see vm-network.ts): the
 * guest then has one virtio-net NIC besides loopback. The machine has 8 virtio-mmio slots and no
 * hotplug: image, writable disk, agent port and NIC take four, volumes (at most 4) the rest.
 * `-no-reboot` turns the guest's power-off
 * or panic-reboot into QEMU exiting, which is how stop is observed.
 *
 * The disks carry serials (`prism-image`, `prism-rw`, `prism-vol<n>`) so the guest can tell them apart by
 * /sys/block/vd?/serial should virtio-mmio probe order ever differ from command-line order.
 */
export function buildQemuArgs(c: QemuVmConfig): string[] {
  if (!(Number.isInteger(c.memoryMb) && c.memoryMb >= 32)) throw new PrismError('INVALID_ARGUMENT', `guest memory must be >= 32 MiB, got ${c.memoryMb}`);
  if (!(Number.isInteger(c.cpus) && c.cpus >= 1 && c.cpus <= 64)) throw new PrismError('INVALID_ARGUMENT', `guest cpus must be 1..64, got ${c.cpus}`);
  const args = [
    '-M', c.memory ? 'microvm,acpi=on,memory-backend=mem' : 'microvm,acpi=on',
    // TCG's code cache defaults to 1 GiB on 64-bit hosts; it counts against the VM's host cgroup.
    '-accel', c.accel === 'tcg' ? 'tcg,tb-size=64' : 'kvm',
    '-cpu', c.accel === 'kvm' ? 'host' : 'max',
    '-m', `${c.memoryMb}M`,
    '-smp', String(c.cpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', checkPath('kernel', c.kernel),
    '-initrd', checkPath('initramfs', c.initramfs),
    '-append', c.cmdline,
    '-serial', `file:${checkPath('console log', c.consoleLog)}`,
    '-pidfile', checkPath('pid file', c.pidFile),
  ];
  if (c.memory) {
    args.push('-object', `memory-backend-file,id=mem,size=${c.memoryMb}M,mem-path=${checkPath('guest memory', c.memory.path)},share=${c.memory.shared ? 'on' : 'off'}`);
  }
  if (c.imageDisk) args.push(...disk('image', c.imageDisk, true));
  if (c.writableDisk) args.push(...disk('rw', c.writableDisk, false));
  for (const [i, v] of (c.volumes ?? []).entries()) args.push(...disk(`vol${i}`, v.image, v.readOnly));
  args.push(
    '-device', 'virtio-serial-device,max_ports=2',
    '-chardev', `socket,id=agent,path=${checkPath('agent socket', c.agentSocket)},server=on,wait=off`,
    '-device', 'virtserialport,chardev=agent,name=prism.agent',
  );
  if (c.nic) args.push(...nicArgs(c.nic));
  if (c.qmpSocket) args.push('-qmp', `unix:${checkPath('QMP socket', c.qmpSocket)},server=on,wait=off`);
  if (c.incoming) args.push('-incoming', 'defer');
  return args;
}

/** The exec: URI goes through /bin/sh, so its path is limited to characters the shell takes literally. */
export function shellSafePath(what: string, p: string): string {
  if (!/^\/[A-Za-z0-9_./-]+$/.test(p)) throw new PrismError('INVALID_ARGUMENT', `${what} path not usable in a QEMU exec: URI: ${p}`);
  return p;
}

/** The virtio serial of volume disk `index`: how the guest agent finds it (`V`). */
export function volumeSerial(index: number): string {
  return `prism-vol${index}`;
}

function disk(name: string, file: string, readOnly: boolean): string[] {
  const drive = [`id=${name}`, `file=${checkPath(`${name} disk`, file)}`, 'format=raw', 'if=none'];
  if (readOnly) drive.push('readonly=on');
  return ['-drive', drive.join(','), '-device', `virtio-blk-device,drive=${name},serial=prism-${name}`];
}

function nicArgs(nic: { tap: string; mac: string }): string[] {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(nic.tap)) throw new PrismError('INVALID_ARGUMENT', `invalid tap name ${JSON.stringify(nic.tap)}`);
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(nic.mac)) throw new PrismError('INVALID_ARGUMENT', `invalid MAC address ${JSON.stringify(nic.mac)}`);
  return ['-netdev', `tap,id=net0,ifname=${nic.tap},script=no,downscript=no`, '-device', `virtio-net-device,netdev=net0,mac=${nic.mac}`];
}
