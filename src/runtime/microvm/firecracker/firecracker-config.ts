import { PrismError } from '../../../core/errors.js';

/**
 * Request builders for Firecracker's REST API, pure functions from our values to the JSON bodies the
 * API takes. Field names follow Firecracker's swagger spec (src/firecracker/swagger/firecracker.yaml,
 * API 1.x): definitions MachineConfiguration, BootSource, Drive, Vsock, InstanceActionInfo, Vm,
 * SnapshotCreateParams, SnapshotLoadParams, MemoryBackend. Built against that spec and unit-tested
 * for their exact bodies; not yet run against a real Firecracker.
 */

export interface FirecrackerRequest<B extends object = object> {
  method: 'PUT' | 'PATCH';
  path: string;
  body: B;
}

export interface MachineConfigBody {
  vcpu_count: number;
  mem_size_mib: number;
  smt: boolean;
}

export interface BootSourceBody {
  kernel_image_path: string;
  initrd_path: string;
  boot_args: string;
}

export interface DriveBody {
  drive_id: string;
  path_on_host: string;
  is_root_device: boolean;
  is_read_only: boolean;
}

export interface PartialDriveBody {
  drive_id: string;
  path_on_host: string;
}

export interface VsockBody {
  guest_cid: number;
  uds_path: string;
}

export type ActionType = 'InstanceStart' | 'SendCtrlAltDel';
export interface ActionBody {
  action_type: ActionType;
}

export type VmState = 'Paused' | 'Resumed';
export interface VmStateBody {
  state: VmState;
}

export interface SnapshotCreateBody {
  snapshot_type: 'Full';
  snapshot_path: string;
  mem_file_path: string;
}

export interface SnapshotLoadBody {
  snapshot_path: string;
  mem_backend: { backend_type: 'File'; backend_path: string };
  resume_vm: boolean;
  vsock_override?: { uds_path: string };
}

/** Drive ids: the guest's disks keep QEMU's order and names (vda = image, vdb = rw). */
export type DriveId = 'image' | 'rw';

/** The spec's range for vcpu_count; with smt off any count in it is accepted. */
const MAX_VCPUS = 32;
/** The guest's CID: 0-2 are reserved (hypervisor, local, host); each VM has its own UDS, so all can use 3. */
export const DEFAULT_GUEST_CID = 3;

function checkPath(what: string, p: string): string {
  if (!p.startsWith('/') || p.includes('\0')) throw new PrismError('INVALID_ARGUMENT', `${what} must be an absolute path, got ${JSON.stringify(p)}`);
  return p;
}

export function machineConfig(o: { vcpus: number; memoryMb: number }): FirecrackerRequest<MachineConfigBody> {
  if (!(Number.isInteger(o.vcpus) && o.vcpus >= 1 && o.vcpus <= MAX_VCPUS)) {
    throw new PrismError('INVALID_ARGUMENT', `Firecracker guests have 1..${MAX_VCPUS} vCPUs, got ${o.vcpus}`);
  }
  if (!(Number.isInteger(o.memoryMb) && o.memoryMb >= 32)) throw new PrismError('INVALID_ARGUMENT', `guest memory must be >= 32 MiB, got ${o.memoryMb}`);
  return { method: 'PUT', path: '/machine-config', body: { vcpu_count: o.vcpus, mem_size_mib: o.memoryMb, smt: false } };
}

/**
 * Kernel parameters Firecracker's x86 machine needs on top of ours: `reboot=k` makes a guest reboot go
 * through the keyboard controller, whose CPU reset is what makes Firecracker exit; `panic=1` turns a
 * panic into that reboot; `pci=off` because there is no PCI bus (devices are virtio-mmio). A parameter
 * already set by the caller is kept. `i8042.nokbd` is dropped: SendCtrlAltDel arrives through the
 * emulated AT keyboard, which that parameter would leave unprobed.
 */
const FIRECRACKER_PARAMS: readonly string[] = ['console=ttyS0', 'reboot=k', 'panic=1', 'pci=off'];

export function firecrackerBootArgs(cmdline: string): string {
  const words = cmdline.split(/\s+/).filter((w) => w !== '' && w !== 'i8042.nokbd');
  const keys = new Set(words.map((w) => w.split('=')[0]));
  for (const p of FIRECRACKER_PARAMS) if (!keys.has(p.split('=')[0]!)) words.push(p);
  return words.join(' ');
}

/** Firecracker loads an uncompressed ELF kernel (vmlinux), not a bzImage. */
export function bootSource(o: { kernel: string; initramfs: string; cmdline: string }): FirecrackerRequest<BootSourceBody> {
  return {
    method: 'PUT',
    path: '/boot-source',
    body: { kernel_image_path: checkPath('kernel', o.kernel), initrd_path: checkPath('initramfs', o.initramfs), boot_args: firecrackerBootArgs(o.cmdline) },
  };
}

/** Neither disk is the root device: the guest boots from the initramfs, whose agent mounts both. */
export function drive(id: DriveId, file: string): FirecrackerRequest<DriveBody> {
  return {
    method: 'PUT',
    path: `/drives/${id}`,
    body: { drive_id: id, path_on_host: checkPath(`${id} disk`, file), is_root_device: false, is_read_only: id === 'image' },
  };
}

/** Post-boot (also after a snapshot load): points a drive at another backing file. */
export function driveUpdate(id: DriveId, file: string): FirecrackerRequest<PartialDriveBody> {
  return { method: 'PATCH', path: `/drives/${id}`, body: { drive_id: id, path_on_host: checkPath(`${id} disk`, file) } };
}

export function vsock(udsPath: string, guestCid = DEFAULT_GUEST_CID): FirecrackerRequest<VsockBody> {
  if (!(Number.isInteger(guestCid) && guestCid >= 3 && guestCid <= 0xfffffffe)) throw new PrismError('INVALID_ARGUMENT', `vsock guest CID must be >= 3, got ${guestCid}`);
  return { method: 'PUT', path: '/vsock', body: { guest_cid: guestCid, uds_path: checkPath('vsock socket', udsPath) } };
}

export function action(type: ActionType): FirecrackerRequest<ActionBody> {
  return { method: 'PUT', path: '/actions', body: { action_type: type } };
}

export function vmState(state: VmState): FirecrackerRequest<VmStateBody> {
  return { method: 'PATCH', path: '/vm', body: { state } };
}

/** A full snapshot: the VM state file and the guest memory file. The VM must be paused. */
export function snapshotCreate(statePath: string, memPath: string): FirecrackerRequest<SnapshotCreateBody> {
  return {
    method: 'PUT',
    path: '/snapshot/create',
    body: { snapshot_type: 'Full', snapshot_path: checkPath('snapshot state', statePath), mem_file_path: checkPath('snapshot memory', memPath) },
  };
}

/**
 * Loads a snapshot into a fresh Firecracker process (only accepted before any other configuration).
 * The snapshot names the disks and the vsock socket by the paths they had when it was taken;
 * `vsockUds` rebinds the vsock device to another socket (SnapshotLoadParams.vsock_override, a recent
 * addition to the API: older Firecrackers reject the field).
 */
export function snapshotLoad(o: { statePath: string; memPath: string; resume: boolean; vsockUds?: string }): FirecrackerRequest<SnapshotLoadBody> {
  const body: SnapshotLoadBody = {
    snapshot_path: checkPath('snapshot state', o.statePath),
    mem_backend: { backend_type: 'File', backend_path: checkPath('snapshot memory', o.memPath) },
    resume_vm: o.resume,
  };
  if (o.vsockUds !== undefined) body.vsock_override = { uds_path: checkPath('vsock socket', o.vsockUds) };
  return { method: 'PUT', path: '/snapshot/load', body };
}

export interface BootConfig {
  kernel: string;
  initramfs: string;
  cmdline: string;
  memoryMb: number;
  vcpus: number;
  imageDisk: string;
  writableDisk: string;
  vsockUds: string;
  guestCid?: number;
}

/** Every request of a cold boot, in the order they are sent; the last one starts the guest. */
export function bootRequests(c: BootConfig): FirecrackerRequest[] {
  return [
    machineConfig({ vcpus: c.vcpus, memoryMb: c.memoryMb }),
    bootSource(c),
    drive('image', c.imageDisk),
    drive('rw', c.writableDisk),
    vsock(c.vsockUds, c.guestCid),
    action('InstanceStart'),
  ];
}
