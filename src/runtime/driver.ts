import type { Readable, Writable } from 'node:stream';
import type { ExecResult, RuntimeName } from '../core/types.js';
import type { WatchEnd } from './pid-watch.js';

/**
 * The RuntimeDriver seam (after Nomad's task drivers). A driver runs *tasks*: one long-lived isolated
 * environment per sandbox, in which commands are executed. Drivers know nothing of the Store or HTTP.
 *
 * Contract:
 * - `create` builds and starts the task and resolves when commands can be executed in it. If it fails
 *   it throws a PrismError and leaves nothing behind (no process, mount, cgroup, file, device).
 * - The daemon persists the returned handle and passes it back; after a daemon restart it calls
 *   `recover(handle)` for every persisted handle before anything else.
 * - `stop` ends every process of the task but keeps its filesystem; `start` runs it again on the same
 *   filesystem. Both are idempotent.
 * - `destroy` removes everything the task owns, stopped or not. Idempotent: destroying a task that is
 *   already gone succeeds.
 * - `exec` runs one command; `kill()` on the returned process kills the command and every process it
 *   started. `result` never rejects for a command that ran: a failure to *start* it rejects with a
 *   PrismError (FAILED_PRECONDITION when the task is not running).
 * - `listTasks` returns the ids of every task this driver holds resources for on this node, so that the
 *   daemon can destroy orphans.
 * Errors: NOT_FOUND (unknown task), FAILED_PRECONDITION (wrong state), RESOURCE_EXHAUSTED, INTERNAL.
 */

/**
 * Where every task has prism-init (guest/init), read-only, whatever the runtime: oci bind-mounts it,
 * docker bakes it into the task's image (or, for an engine's own image, puts it into the container),
 * the microvm agent bind-mounts it from the initramfs. The file service runs `TASK_INIT_PATH fs OP ...`
 * through `exec`, so file operations happen inside the task's own root (guest/init/fs-helper.c) and no
 * driver needs a file API of its own.
 */
export const TASK_INIT_PATH = '/.prism/init';

export interface TaskSpec {
  /** The sandbox id; everything the driver creates is named or labelled with it. */
  id: string;
  hostname: string;
  /** Unpacked image layers, lowest first; the driver stacks a private writable layer on top. Empty when `image` is set. */
  layers: string[];
  /**
   * Only for a driver whose capabilities say `ownImages`: the runtime's own image
   * ({@link RuntimeImage.id}) as the task's root filesystem, instead of `layers`.
   */
  image?: string;
  /** Base environment of every command (image env merged with sandbox env). */
  env: Record<string, string>;
  workdir: string;
  cpus: number;
  memoryMb: number;
  pidsLimit: number;
  /** Size of the private writable layer in MiB: a write past it fails with ENOSPC. */
  diskMb: number;
  /** RLIMIT_NOFILE (soft = hard) of the task's processes. */
  maxOpenFiles: number;
  /** Run commands as this user (`name|uid[:group|gid]`, resolved in the image); absent = root. */
  user?: string;
  /**
   * Join this prepared network namespace (made and owned by the NetworkManager) instead of a new one
   * with only `lo`, and resolve names with these servers. Absent: no network. A driver whose
   * capabilities say `network: 'own'` ignores netnsPath: its task keeps its own namespace, which the
   * NetworkManager links after create and start (see {@link RuntimeDriver.taskNetns}).
   */
  network?: { netnsPath: string; nameservers: string[] };
  /**
   * Volumes to mount at `mountPath` (absolute, validated by the service), each an ext4 image file on
   * this host (VolumeStore). The driver mounts them on every start and releases them on stop and
   * destroy; a failed create leaves no loop device or mount. The service guarantees the image is not
   * mounted by another kernel while this task may write to it.
   */
  volumes?: TaskVolume[];
  /**
   * Only with capabilities().memorySnapshots: create the task from the memory snapshot in this
   * directory (RuntimeDriver.snapshotMemory) instead of booting: its disk and its running processes,
   * with this spec's id, hostname and network. The spec's shape (cpus, memoryMb, diskMb, layers) must
   * be the snapshotted task's.
   */
  restore?: { dir: string };
}

export interface TaskVolume {
  name: string;
  /** Host path of the volume's ext4 image. */
  image: string;
  mountPath: string;
  readOnly: boolean;
}

export interface TaskHandle {
  id: string;
  runtime: RuntimeName;
  spec: TaskSpec;
  /** Driver-private data needed to find the task again (paths, pids). JSON-serialisable. */
  data: Record<string, unknown>;
}

/** `paused`: frozen by pause(), memory kept. */
export type TaskState = 'running' | 'paused' | 'stopped' | 'gone';

export interface ExecOptions {
  argv: string[];
  /** The complete environment of the command. */
  env: Record<string, string>;
  cwd: string;
  /** When true the returned process has a writable `stdin`; otherwise stdin is empty. */
  stdin: boolean;
  /**
   * Run the command on a new pseudo-terminal of this size: it gets a new session with the terminal as
   * its controlling tty and as fds 0-2, so `stdin` (always writable then) and `stdout` carry the
   * terminal's bytes both ways (messages of the driver's own, such as "cannot run", too) and `stderr`
   * is empty and already ended (it needs no reader). Bytes written to stdin go through the line
   * discipline (0x03 interrupts the foreground process group; ^D is end of input, ending stdin does
   * nothing). TERM is xterm-256color unless `env` sets it.
   */
  tty?: { cols: number; rows: number };
  /** Run as the task's root instead of `TaskSpec.user` (file operations asked for as root). */
  asRoot?: boolean;
}

export interface TaskProcess {
  stdin: Writable | null;
  stdout: Readable;
  stderr: Readable;
  /** Resolves when the command has exited and its output has been fully delivered. */
  result: Promise<Omit<ExecResult, 'timedOut' | 'limitExceeded'>>;
  /**
   * Kills the command and all its descendants (SIGKILL unless told otherwise). On a tty, a signal
   * other than SIGKILL goes to the terminal's foreground process group (what Ctrl-C would reach).
   */
  kill(signal?: NodeJS.Signals): void;
  /** Present when started with `tty`: sets the terminal's size (the kernel sends SIGWINCH). */
  resize?(cols: number, rows: number): void;
}

/** A running task's usage now. Counters a runtime cannot read are 0. */
export interface TaskStats {
  memoryBytes: number;
  memoryLimitBytes: number;
  /** Of memoryBytes, the page cache (reclaimable file pages). */
  memoryCacheBytes: number;
  /** CPU time used since the task started (a counter). */
  cpuUsageNs: number;
  pids: number;
  /** The writable layer: bytes in use and its size (diskMb), as `df` in the sandbox shows its root. */
  diskUsedBytes: number;
  diskTotalBytes: number;
}

export interface RuntimeCapabilities {
  isolation: 'container' | 'vm';
  /** Filesystem survives stop/start. */
  persistentFilesystem: boolean;
  /** Tasks survive a daemon restart (recover can reattach). */
  survivesDaemonRestart: boolean;
  /**
   * How a task gets its network (TaskSpec.network). `join` (the default when absent): it joins the
   * namespace prepared at netnsPath. `own`: the engine makes the task's namespace and cannot join
   * another (Docker); the NetworkManager links the namespace that `taskNetns` names, after every create and start.
   */
  network?: 'join' | 'own';
  /**
   * The runtime keeps images of its own (a Docker engine's `docker images`). Then it has `findImage` and
   * `pullImage`, and the service looks there before Prism's image store and lets the runtime pull what
   * neither has (src/service/task-image.ts). Absent: tasks are made from Prism's store only.
   */
  ownImages?: boolean;
  /**
   * With pause/resume: where a paused task's memory is kept. `ram`: its processes are frozen in place
   * (the cgroup freezer, the engine's pause); `disk`: saved to a file and the task's process exits.
   */
  pause?: 'ram' | 'disk';
  /** snapshotMemory is there and TaskSpec.restore is honoured: snapshots and forks keep running processes. */
  memorySnapshots?: boolean;
}

/**
 * An image the runtime keeps itself (a Docker engine's), as `findImage`/`pullImage` report it. Its
 * config is what the service applies to every command, as for an image of Prism's store.
 */
export interface RuntimeImage {
  /** The runtime's id of the image (the engine's `sha256:...`): what TaskSpec.image names. */
  id: string;
  /** The image config's environment, `KEY=value` entries. */
  env: string[];
  workingDir?: string;
  user?: string;
}

export interface ProbeResult {
  usable: boolean;
  /** Why it is not usable, or notes about how it runs (e.g. accelerator). */
  reason?: string;
  details?: Record<string, string>;
}

export interface RuntimeDriver {
  readonly name: RuntimeName;
  capabilities(): RuntimeCapabilities;
  /** Checks that the driver can run tasks on this host. Never throws. */
  probe(): Promise<ProbeResult>;
  create(spec: TaskSpec): Promise<TaskHandle>;
  start(handle: TaskHandle): Promise<void>;
  recover(handle: TaskHandle): Promise<TaskState>;
  exec(handle: TaskHandle, opts: ExecOptions): Promise<TaskProcess>;
  stop(handle: TaskHandle, opts?: { timeoutMs?: number }): Promise<void>;
  destroy(handle: TaskHandle): Promise<void>;
  inspect(handle: TaskHandle): Promise<TaskState>;
  /**
   * Optional: true when the task's processes surely still run, found without spawning anything (the
   * node's watchdog asks this of every running task every few seconds; with a thousand tasks a
   * `runc state` each would take the node's CPU). False or absent: the caller asks `inspect`.
   */
  seemsAlive?(handle: TaskHandle): Promise<boolean>;
  /**
   * Optional: calls `onEnd` once when the running task's processes end, so the node learns of a dead
   * task without polling it (`lost` / `unwatchable`: see PidWatcher). False: this task cannot be
   * watched, the caller polls it. `unwatchExit` ends a watch without a call.
   */
  watchExit?(handle: TaskHandle, onEnd: (why: WatchEnd) => void): Promise<boolean>;
  unwatchExit?(handle: TaskHandle): void;
  /**
   * Only where capabilities().pause is set. Freezes every process of a running task, keeping its
   * memory; idempotent on a paused task. FAILED_PRECONDITION when it is not running, NOT_FOUND when gone.
   * While paused, exec and stats may block or fail: the service resumes first. `stop` and `destroy`
   * work on a paused task. A paused task stays paused across a daemon restart (`recover` says `paused`).
   */
  pause?(handle: TaskHandle): Promise<void>;
  /** Thaws a paused task: its processes continue where they were; idempotent on a running task. */
  resume?(handle: TaskHandle): Promise<void>;
  /**
   * Writes the task's writable layer (what it changed over its image) to `dest` as an uncompressed
   * OCI layer tar, consistent: a running task is frozen while it is read. Running, paused or stopped.
   * Absent where the runtime cannot (its snapshots answer UNIMPLEMENTED).
   */
  exportLayer?(handle: TaskHandle, dest: string): Promise<void>;
  /**
   * Only with capabilities().memorySnapshots: writes a running or paused task's memory, devices and
   * disk to the empty directory `dir`, from which new tasks are created (TaskSpec.restore). A running
   * task is stopped for the time of the copy and then runs on. FAILED_PRECONDITION for a stopped task.
   */
  snapshotMemory?(handle: TaskHandle, dir: string): Promise<void>;
  /**
   * Only with capabilities().ownImages, for runtimes whose snapshots are their own images: commits
   * the task's filesystem as the runtime image `ref` (the engine's commit, which pauses a running
   * container meanwhile) and returns its id and the bytes it added. Tasks are then made from `ref`.
   */
  commitImage?(handle: TaskHandle, ref: string): Promise<{ id: string; size: number }>;
  /** Only with commitImage: removes a committed image; a missing one is not an error. */
  removeImage?(ref: string): Promise<void>;
  stats(handle: TaskHandle): Promise<TaskStats>;
  listTasks(): Promise<string[]>;
  /**
   * Only with capabilities().network === 'own': the network namespace file of the running task
   * (e.g. `/proc/<pid>/ns/net`), valid until it stops. FAILED_PRECONDITION when the task is not running
   * or not on this host (a remote engine).
   */
  taskNetns?(handle: TaskHandle): Promise<string>;
  /**
   * Only with capabilities().ownImages: the runtime's image for `ref` as the runtime names it (a tag
   * such as `myapp:dev`, an image id or a digest reference), or undefined when it has none. Pulls
   * nothing. Errors: UNAVAILABLE (the runtime does not answer).
   */
  findImage?(ref: string): Promise<RuntimeImage | undefined>;
  /**
   * Only with capabilities().ownImages: has the runtime pull `ref` with its own credentials and
   * mirrors. Errors: NOT_FOUND (no such image; the message names `ref`), UNAUTHENTICATED /
   * PERMISSION_DENIED (the registry refused), UNAVAILABLE (registry or runtime unreachable),
   * INVALID_ARGUMENT (a reference the runtime rejects). A failed pull tags nothing.
   */
  pullImage?(ref: string): Promise<RuntimeImage>;
  /** Releases the driver's connections and timers (daemon shutdown). Tasks keep running. Idempotent. */
  close(): Promise<void>;
}
