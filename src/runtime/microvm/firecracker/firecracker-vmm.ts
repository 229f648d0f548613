import { spawn } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { access, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { delimiter, dirname, join } from 'node:path';
import { PrismError } from '../../../core/errors.js';
import { FirecrackerApi } from './firecracker-api.js';
import type { TaskPaths } from '../vm-boot.js';
import type { Vmm, VmmProcess, VmmStart } from '../vmm.js';
import { connectVsock } from './vsock-connect.js';
import { action, bootRequests, driveUpdate, snapshotCreate, snapshotLoad, vmState, type BootConfig, type FirecrackerRequest } from './firecracker-config.js';

/**
 * The host side of a Firecracker microVM: one `firecracker --api-sock <task>/fc.sock` process per VM,
 * started detached (it survives prismd) with stdout (the guest's serial console) appended to the
 * console log and stderr (Firecracker's own log) to `<task>/firecracker.log`, then configured and
 * started through its API. A pid is only trusted while its command line still names the task's API
 * socket, so a recycled pid is never signalled.
 *
 * Built against Firecracker's API spec and docs (swagger firecracker.yaml, docs/api_requests/actions.md,
 * docs/snapshotting/snapshot-support.md) and unit-tested against a fake that serves the API; untested
 * against a real Firecracker (none on the machines this was written on).
 */

/** What to boot (kernel: an uncompressed vmlinux; vsockUds: created by Firecracker, a stale one is removed first). */
export interface LaunchOptions extends BootConfig {
  binary: string;
  taskDir: string;
  consoleLog: string;
  /** Not supported yet: see jailer-args.ts for what running jailed changes. */
  jailer?: string;
}

export interface RestoreOptions {
  binary: string;
  taskDir: string;
  consoleLog: string;
  /** Rebind the vsock device to this socket instead of the one recorded in the snapshot. */
  vsockUds?: string;
  /** Back the `rw` drive with this file instead of the one recorded in the snapshot (a fresh disk). */
  writableDisk?: string;
  jailer?: string;
}

/** What identifies a running VM across prismd restarts. */
export interface FirecrackerVm {
  pid: number;
  apiSocket: string;
}

export interface LaunchedVm extends FirecrackerVm {
  /** Resolves with the exit description if the process exits while this prismd still owns it. */
  exited: Promise<string>;
}

export interface FirecrackerVmmOptions {
  /** The `firecracker` executable the {@link Vmm} methods start (default: `firecracker` on PATH). */
  binary?: string;
  /** How long Firecracker may take to create its API socket. */
  startTimeoutMs?: number;
  apiTimeoutMs?: number;
  /** How long shutdown waits after SendCtrlAltDel before SIGKILL. */
  shutdownGraceMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The guest agent's vsock port (guest/agent/boot.c). */
export const AGENT_VSOCK_PORT = 1024;

/**
 * Also the {@link Vmm} of the microvm driver when Firecracker is selected (vmm-select.ts): a VM's
 * vsock device is bound to `paths.agentSocket`, its API socket `fc.sock` in the VM's directory is
 * the marker on its command line, and a template is `state` + `mem` side by side. UNTESTED against a
 * real Firecracker (none can be installed where this was written); only fakes have exercised it.
 */
export class FirecrackerVmm implements Vmm {
  readonly name = 'firecracker' as const;
  readonly binary: string;
  private readonly startTimeoutMs: number;
  private readonly apiTimeoutMs: number;
  private readonly shutdownGraceMs: number;

  constructor(o: FirecrackerVmmOptions = {}) {
    this.binary = o.binary ?? 'firecracker';
    this.startTimeoutMs = o.startTimeoutMs ?? 5_000;
    this.apiTimeoutMs = o.apiTimeoutMs ?? 10_000;
    this.shutdownGraceMs = o.shutdownGraceMs ?? 3_000;
  }

  /** `explicit` if it is an executable file, else the first `firecracker` on PATH; undefined if none. */
  static async findBinary(explicit?: string): Promise<string | undefined> {
    const candidates = explicit !== undefined ? [explicit] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'firecracker'));
    for (const c of candidates) {
      const ok = await access(c, fsConstants.X_OK).then(() => stat(c)).then((s) => s.isFile(), () => false);
      if (ok) return c;
    }
    return undefined;
  }

  static apiSocketPath(taskDir: string): string {
    return join(taskDir, 'fc.sock');
  }

  /** Starts the process, configures the VM and starts the guest. On failure the process is killed. */
  async launch(o: LaunchOptions): Promise<LaunchedVm> {
    rejectJailer(o.jailer);
    await rm(o.vsockUds, { force: true });
    return this.startWith(o, bootRequests(o));
  }

  /**
   * A new process restored from a full snapshot. The disks are reopened at the paths recorded in the
   * snapshot unless `writableDisk` names a new one, in which case the VM is loaded paused, its `rw`
   * drive repointed, and only then resumed. Vsock connections open at snapshot time are reset (the
   * guest's listener survives), so the host reconnects to the agent.
   */
  async restore(o: RestoreOptions, statePath: string, memPath: string): Promise<LaunchedVm> {
    rejectJailer(o.jailer);
    if (o.vsockUds !== undefined) await rm(o.vsockUds, { force: true });
    const requests: FirecrackerRequest[] = [snapshotLoad({ statePath, memPath, resume: o.writableDisk === undefined, vsockUds: o.vsockUds })];
    if (o.writableDisk !== undefined) requests.push(driveUpdate('rw', o.writableDisk), vmState('Resumed'));
    return this.startWith(o, requests);
  }

  pause(vm: FirecrackerVm): Promise<void> {
    return this.api(vm).send(vmState('Paused'));
  }

  resumeVm(vm: FirecrackerVm): Promise<void> {
    return this.api(vm).send(vmState('Resumed'));
  }

  // ---- Vmm ----

  async describe(): Promise<Record<string, string>> {
    const version = await new Promise<string>((resolve, reject) => {
      execFile(this.binary, ['--version'], { timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout.split('\n')[0]!.trim())));
    }).catch((e: Error) => {
      throw new PrismError('FAILED_PRECONDITION', `cannot run Firecracker ${this.binary}: ${e.message}`, { cause: e });
    });
    return { vmm: 'firecracker (UNTESTED: this backend has never run against a real Firecracker)', firecracker: version };
  }

  marker(paths: TaskPaths): string {
    return FirecrackerVmm.apiSocketPath(paths.task);
  }

  async start(o: VmmStart): Promise<VmmProcess> {
    const { shape, paths: p } = o;
    // Firecracker's drives carry no serial for the agent to find a volume by; not wired yet.
    if (o.volumes?.length) throw new PrismError('FAILED_PRECONDITION', 'volumes are not supported on Firecracker yet; use QEMU (prismd --vmm qemu, the default)');
    if (o.network) throw new PrismError('FAILED_PRECONDITION', 'sandbox networking on the microvm runtime needs QEMU for now (Firecracker has no network device wiring yet; docs/network.md)');
    const base = { binary: this.binary, taskDir: p.task, consoleLog: p.consoleLog };
    const vm = o.incoming
      ? await this.restore({ ...base, vsockUds: p.agentSocket, writableDisk: p.rwDisk }, o.incoming, join(dirname(o.incoming), 'mem'))
      : await this.launch({
        ...base, kernel: shape.files.kernel, initramfs: shape.files.initramfs, cmdline: shape.cmdline, memoryMb: shape.memoryMb,
        vcpus: shape.cpus, imageDisk: shape.imageDisk, writableDisk: p.rwDisk, vsockUds: p.agentSocket,
      });
    await writeFile(p.pidFile, `${vm.pid}\n`);
    return { pid: vm.pid, exited: vm.exited };
  }

  dialAgent(agentSocket: string, timeoutMs: number): Promise<Socket> {
    return connectVsock(agentSocket, AGENT_VSOCK_PORT, timeoutMs);
  }

  async resume(paths: TaskPaths): Promise<void> {
    await this.api(this.vmOf(paths)).send(vmState('Resumed'));
  }

  async save(paths: TaskPaths, stateFile: string, timeoutMs: number): Promise<void> {
    const vm = this.vmOf(paths);
    await this.pause(vm);
    await this.api(vm, timeoutMs).send(snapshotCreate(stateFile, join(dirname(stateFile), 'mem')));
  }

  async quit(paths: TaskPaths): Promise<void> {
    const pid = Number((await readFile(paths.pidFile, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 1) await kill({ pid, apiSocket: this.marker(paths) }).catch(() => undefined);
  }

  /** The API needs only the socket; the pid is not used for requests. */
  private vmOf(paths: TaskPaths): FirecrackerVm {
    return { pid: 0, apiSocket: this.marker(paths) };
  }

  /** A full snapshot of a VM paused by {@link pause}; it stays paused (resume it or shut it down). */
  snapshot(vm: FirecrackerVm, statePath: string, memPath: string): Promise<void> {
    return this.api(vm).send(snapshotCreate(statePath, memPath));
  }

  /**
   * SendCtrlAltDel, then SIGKILL if the process is still there after the grace period. Idempotent.
   * Firecracker exits when the guest resets the CPU; a guest whose init ignores Ctrl-Alt-Del (the
   * kernel turns it into SIGINT to PID 1, which the agent does not handle) is killed.
   */
  async shutdown(vm: FirecrackerVm): Promise<void> {
    if (!(await isFirecrackerAlive(vm))) return;
    await this.api(vm, Math.min(this.apiTimeoutMs, 2_000)).send(action('SendCtrlAltDel')).catch(() => undefined);
    if (await waitExit(vm, this.shutdownGraceMs)) return;
    await kill(vm);
  }

  private api(vm: FirecrackerVm, timeoutMs = this.apiTimeoutMs): FirecrackerApi {
    return new FirecrackerApi(vm.apiSocket, timeoutMs);
  }

  private async startWith(o: { binary: string; taskDir: string; consoleLog: string }, requests: FirecrackerRequest[]): Promise<LaunchedVm> {
    const apiSocket = FirecrackerVmm.apiSocketPath(o.taskDir);
    const logFile = join(o.taskDir, 'firecracker.log');
    await rm(apiSocket, { force: true });
    const vm = await spawnDetached(o.binary, ['--api-sock', apiSocket], o.consoleLog, logFile, apiSocket);
    const died = vm.exited.then((how) => {
      throw exitError(how, logFile);
    });
    died.catch(() => undefined); // once started, an exit is observed by the caller through `exited`
    try {
      await Promise.race([waitForSocket(apiSocket, this.startTimeoutMs), died]);
      const api = this.api(vm);
      for (const r of requests) await Promise.race([api.send(r), died]);
      return vm;
    } catch (e) {
      await kill(vm).catch(() => undefined);
      throw await withLogTail(e, logFile);
    }
  }
}

function rejectJailer(jailer: string | undefined): void {
  if (jailer !== undefined) {
    throw new PrismError('FAILED_PRECONDITION', `running Firecracker under the jailer (${jailer}) is not supported yet: the VM's files would have to be linked into its chroot`);
  }
}

function spawnDetached(binary: string, args: string[], stdoutFile: string, stderrFile: string, apiSocket: string): Promise<LaunchedVm> {
  const out = openSync(stdoutFile, 'a');
  const err = openSync(stderrFile, 'a');
  try {
    const child = spawn(binary, args, { detached: true, stdio: ['ignore', out, err] });
    return new Promise((resolve, reject) => {
      child.once('error', (e) => reject(new PrismError('FAILED_PRECONDITION', `cannot run ${binary}: ${e.message}`, { cause: e })));
      child.once('spawn', () => {
        const exited = new Promise<string>((r) => child.once('exit', (code, sig) => r(sig ? `signal ${sig}` : `exit code ${code}`)));
        child.unref();
        resolve({ pid: child.pid!, apiSocket, exited });
      });
    });
  } finally {
    closeSync(out);
    closeSync(err);
  }
}

/** Resolves once something accepts on `path`. */
async function waitForSocket(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection(path);
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new PrismError('DEADLINE_EXCEEDED', `Firecracker did not open its API socket ${path} within ${timeoutMs} ms`);
    await sleep(10);
  }
}

function exitError(how: string, logFile: string): PrismError {
  return new PrismError('INTERNAL', `Firecracker exited during start-up (${how}); see ${logFile}`);
}

async function withLogTail(e: unknown, logFile: string): Promise<unknown> {
  if (!(e instanceof PrismError) || e.code === 'INVALID_ARGUMENT') return e;
  const tail = (await readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ');
  return tail ? new PrismError(e.code, `${e.message} (firecracker.log: ${tail})`, { cause: e }) : e;
}

/** True while `vm.pid` is a live (not zombie) process whose argv names the VM's API socket. */
export async function isFirecrackerAlive(vm: FirecrackerVm): Promise<boolean> {
  if (!Number.isInteger(vm.pid) || vm.pid <= 1) return false;
  const st = await readFile(`/proc/${vm.pid}/stat`, 'utf8').catch(() => '');
  const state = st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3);
  if (!state || state === 'Z' || state === 'X') return false;
  const cmdline = await readFile(`/proc/${vm.pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.split('\0').includes(vm.apiSocket);
}

async function waitExit(vm: FirecrackerVm, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await isFirecrackerAlive(vm)) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

async function kill(vm: FirecrackerVm): Promise<void> {
  if (!(await isFirecrackerAlive(vm))) return;
  try {
    process.kill(vm.pid, 'SIGKILL');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
  if (!(await waitExit(vm, 10_000))) throw new PrismError('INTERNAL', `Firecracker ${vm.pid} did not die after SIGKILL`);
}
