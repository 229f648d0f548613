import { basename, join } from 'node:path';
import { PrismError } from '../../../core/errors.js';

/**
 * The argv of Firecracker's jailer (docs/jailer.md, "Jailer Usage"), which isolates one Firecracker
 * process: it copies the binary into `<chrootBase>/<exec file name>/<id>/root`, pivots into that
 * directory, creates /dev/kvm there, joins cgroups, drops to uid:gid and execs Firecracker with the
 * arguments after `--`.
 *
 * What changes for the VMM under the jailer (not wired into FirecrackerVmm.launch yet):
 * - every path Firecracker sees is inside the chroot: the kernel, initramfs, both disks and the
 *   snapshot files must be hard-linked or bind-mounted into {@link jailRoot} and named by their path
 *   relative to it in the API requests (`/vmlinux`, not the host path);
 * - the API socket and the vsock socket are created inside the chroot, so the host connects to
 *   `jailRoot(...) + apiSock` and `jailRoot(...) + uds_path`;
 * - files Firecracker writes (the writable disk, snapshots) must be owned by uid:gid;
 * - `--daemonize` is not used: it sends stdout, the serial console, to /dev/null;
 * - the jail directory is ours to remove after the VM is gone.
 */

export interface JailerOptions {
  jailer: string;
  /** The Firecracker binary; the jailer refuses a file name without "firecracker" in it. */
  firecracker: string;
  /** The VM's id (the task id): alphanumeric and hyphens, at most 64 characters. */
  id: string;
  uid: number;
  gid: number;
  /** Default /srv/jailer. */
  chrootBaseDir?: string;
  cgroupVersion?: 1 | 2;
  /** The API socket's path inside the jail. */
  apiSock: string;
  /** Run Firecracker as PID 1 of a new PID namespace; its pid is then in `<jail>/firecracker.pid`. */
  newPidNs?: boolean;
}

export const DEFAULT_CHROOT_BASE = '/srv/jailer';

function checkId(id: string): string {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) throw new PrismError('INVALID_ARGUMENT', `jailer id must be 1-64 letters, digits or hyphens, got ${JSON.stringify(id)}`);
  return id;
}

export function buildJailerArgs(o: JailerOptions): { file: string; args: string[] } {
  if (!basename(o.firecracker).includes('firecracker')) {
    throw new PrismError('INVALID_ARGUMENT', `the jailer only runs a binary whose name contains "firecracker", got ${o.firecracker}`);
  }
  for (const [k, v] of [['uid', o.uid], ['gid', o.gid]] as const) {
    if (!(Number.isInteger(v) && v >= 0)) throw new PrismError('INVALID_ARGUMENT', `jailer ${k} must be a non-negative integer, got ${v}`);
  }
  if (!o.apiSock.startsWith('/')) throw new PrismError('INVALID_ARGUMENT', `API socket path inside the jail must be absolute, got ${o.apiSock}`);
  const args = ['--id', checkId(o.id), '--exec-file', o.firecracker, '--uid', String(o.uid), '--gid', String(o.gid)];
  if (o.chrootBaseDir !== undefined) args.push('--chroot-base-dir', o.chrootBaseDir);
  if (o.cgroupVersion !== undefined) args.push('--cgroup-version', String(o.cgroupVersion));
  if (o.newPidNs) args.push('--new-pid-ns');
  args.push('--', '--api-sock', o.apiSock);
  return { file: o.jailer, args };
}

/** The host path of the jail's root directory, where Firecracker's `/` is. */
export function jailRoot(o: Pick<JailerOptions, 'firecracker' | 'id' | 'chrootBaseDir'>): string {
  return join(o.chrootBaseDir ?? DEFAULT_CHROOT_BASE, basename(o.firecracker), checkId(o.id), 'root');
}
