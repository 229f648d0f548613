import type { Socket } from 'node:net';
import type { TaskPaths, VmShape } from './vm-boot.js';

export type VmmName = 'qemu' | 'firecracker';
export const VMM_NAMES: readonly VmmName[] = ['qemu', 'firecracker'];

/** What a VMM is started with: the VM's shape and files, and optionally a template to restore. */
export interface VmmStart {
  shape: VmShape;
  /** The VM's directory: disks, sockets, pid file and logs (a task's, a template build's or a pool VM's). */
  paths: TaskPaths;
  /**
   * Restore this template instead of booting: the path of its `state` file, written by {@link Vmm.save}
   * (a VMM may keep more files beside it, e.g. Firecracker's `mem`). The VM must have the same shape
   * and gets its own writable disk `paths.rwDisk` in the same device slot.
   */
  incoming?: string;
  /**
   * With `incoming`: the memory image written by {@link Vmm.saveImage} with that state (which then
   * holds devices only). `copy`: the VM gets its own RAM from it (so its own later snapshot is one copy
   * again); `cow`: the image is mapped copy-on-write, and VMs restored from it share its unchanged pages.
   */
  memoryImage?: { path: string; mode: 'copy' | 'cow' };
  /**
   * With `incoming`: how long loading the state may take before start gives up (default 10 s). A
   * caller with a cold boot to fall back on keeps it short; one without (a resume, a user snapshot)
   * waits as long as a boot would, since a busy host slows a large restore down.
   */
  restoreTimeoutMs?: number;
  /** Volume images attached as extra disks after the writable one (never with `incoming`: a template has none). */
  volumes?: Array<{ image: string; readOnly: boolean }>;
  /**
   * Run the VMM inside this network namespace with a NIC on its tap `tap` (vm-network.ts), MAC `mac`.
   * Absent: no network device. Only QEMU supports it so far.
   */
  network?: { netnsPath: string; tap: string; mac: string };
  /**
   * Wraps the VMM's argv (binary first) so that it starts inside the task's cgroup
   * (TaskCgroups.launchCommand: `systemd-run --scope ...` under systemd); the wrapper must exec it, so
   * the pid stays the VMM's. Absent: the VMM is started as it is.
   */
  launch?: (argv: string[]) => string[];
}

/** A VMM process started by this prismd. */
export interface VmmProcess {
  pid: number;
  /** Resolves with how the process exited (e.g. "signal SIGKILL"), if it exits while this prismd runs. */
  exited: Promise<string>;
}

/**
 * The virtual machine monitor under the microvm driver: QEMU (`qemu-vmm.ts`) or Firecracker
 * (`firecracker/firecracker-vmm.ts`, used when a `firecracker` binary is found). The driver, template
 * store and warm pool drive VMs only through this; only our own types cross it.
 *
 * Contract:
 * - Processes are started detached (a VM outlives prismd) and write their pid to `paths.pidFile`.
 *   They are identified across prismd restarts by that pid AND `marker(paths)` appearing on their
 *   command line, so a recycled pid is never signalled. Killing is the caller's (qemu-process.ts's
 *   killQemu works on any VMM process by pid + marker); cgroups are the caller's too.
 * - `start` resolves once the guest runs (a restore has been loaded and resumed). If it rejects, the
 *   process may still exist: the caller tears down by pid file, as after any failed start.
 * - The guest agent speaks docs/microvm-agent-protocol.md over whatever `dialAgent` connects to; it
 *   rejects while nothing answers yet (the caller retries until its deadline).
 * - `save` leaves the VM paused and its state complete on disk when it resolves; the caller quits it.
 * - `resume` and `quit` are idempotent and best effort on a VM that is already running / gone.
 */
export interface Vmm {
  readonly name: VmmName;
  /** The VMM's executable (a path, or a name looked up on PATH). */
  readonly binary: string;
  /** The binary and its version, for `node info`; says so when the backend is untested. */
  describe(): Promise<Record<string, string>>;
  /** What the VM's command line contains that no other VM's does (see the contract). */
  marker(paths: TaskPaths): string;
  start(o: VmmStart): Promise<VmmProcess>;
  /** A connected stream to the guest agent behind `agentSocket` (a VM's `paths.agentSocket`). */
  dialAgent(agentSocket: string, timeoutMs: number): Promise<Socket>;
  /** Runs a paused VM (one whose restore a crashed prismd left paused); no-op when running. */
  resume(paths: TaskPaths): Promise<void>;
  /** Pauses the VM and writes its state to `stateFile` (and files beside it); the VM stays paused. */
  save(paths: TaskPaths, stateFile: string, timeoutMs: number): Promise<void>;
  /**
   * Pauses the VM and writes its device state to `stateFile` and its RAM to `memoryImage`, a sparse
   * file that {@link VmmStart.memoryImage} maps; the VM stays paused (`resume` continues it, as it was).
   * Resolves false, having changed nothing, when this VM's RAM cannot be imaged so (then `save` it).
   * Optional: a VMM without it snapshots only through `save`.
   */
  saveImage?(paths: TaskPaths, stateFile: string, memoryImage: string, timeoutMs: number): Promise<boolean>;
  /** Asks the VMM process to exit at once, without a guest shutdown. */
  quit(paths: TaskPaths): Promise<void>;
}
