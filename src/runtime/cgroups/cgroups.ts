/**
 * The cgroups of one kind of task on this host, whatever the host's cgroup version and manager.
 *
 * A kind is a family of cgroups named by task id: `prism` for oci containers (made by runc), `prism-vm`
 * for the QEMU processes of microVMs (made here by `enter`). Implementations: cgroup v1 (one directory
 * per controller hierarchy) and cgroup v2 (one unified directory), the latter with two placements:
 * `cgroupfs` (directories Prism makes itself under `/sys/fs/cgroup/<kind>`) and `systemd` (each task a
 * transient scope `<kind>-<id>.scope` that runc or `systemd-run` asks systemd for, so tasks live outside
 * prismd's own unit and survive `systemctl restart prismd`).
 *
 * Contract:
 * - `dirs(id)` names every directory the task's cgroup has or would have (for leak checks and humans).
 * - `usage` throws NOT_FOUND when the task has no cgroup (it is not running).
 * - `applied` reads back the limits the kernel holds for the task, so a driver can refuse to run a task
 *   whose limits did not land (they must never be dropped silently); NOT_FOUND without a cgroup.
 * - `oomKills` counts OOM kills in the task's cgroup since it was made; -1 when it cannot be read.
 * - `enter` makes the cgroup with its limits and moves a process (all its threads) in; a limit that
 *   cannot be applied fails the call (FAILED_PRECONDITION) and leaves no cgroup behind.
 * - `remove` kills whatever is still inside, then removes the cgroup, retrying while the kernel still
 *   tears processes down; idempotent; returns the directories it could not remove.
 * - `list` returns the ids of tasks of this kind that have a cgroup; `pids` the processes in one.
 * - `launchCommand` wraps the argv of a process Prism starts itself for a task (QEMU) so that it starts
 *   inside the task's cgroup where the placement cannot move a running process (systemd scopes);
 *   `enter` then only verifies. Identity where processes are moved by `enter`.
 */
export interface TaskCgroups {
  readonly version: 1 | 2;
  readonly placement: 'cgroupfs' | 'systemd';
  dirs(id: string): string[];
  /** runc's `linux.cgroupsPath` for a task of this kind. */
  runcPath(id: string): string;
  /** Global runc flags the placement needs (`--systemd-cgroup` for systemd scopes). */
  runcFlags(): string[];
  /** The task may be given a swap limit (runc refuses one where swap is not accounted). */
  swapAccounting(): boolean;
  usage(id: string): Promise<CgroupUsage>;
  applied(id: string): Promise<AppliedLimits>;
  oomKills(id: string): Promise<number>;
  /** Whether the cgroup is frozen (paused) or freezing; undefined when it cannot be read. */
  frozen(id: string): Promise<boolean | undefined>;
  enter(id: string, pid: number, limits: CgroupLimits): Promise<void>;
  launchCommand(id: string, limits: CgroupLimits, argv: string[]): string[];
  remove(id: string, timeoutMs?: number): Promise<string[]>;
  list(): Promise<string[]>;
  pids(id: string): Promise<number[]>;
}

export interface CgroupUsage {
  memoryBytes: number;
  /** 0 when unlimited. */
  memoryLimitBytes: number;
  /** Page cache charged to the cgroup (memory.stat `file` on v2, `cache` on v1). */
  memoryCacheBytes: number;
  cpuUsageNs: number;
  pids: number;
}

/** Limits as the kernel holds them; 0 = unlimited. */
export interface AppliedLimits {
  memoryBytes: number;
  pids: number;
  /** CFS quota and period in microseconds (quota 0 = unlimited). */
  cpuQuotaUs: number;
  cpuPeriodUs: number;
}

export interface CgroupLimits {
  memoryBytes: number;
  pids: number;
}

/** What the host offers; see probe.ts. */
export interface CgroupHost {
  version: 1 | 2;
  /** PID 1 is systemd: v2 tasks go into systemd scopes (runc --systemd-cgroup). */
  systemd: boolean;
  /** Controllers Prism can use for its tasks. */
  controllers: string[];
  /** Why Prism cannot limit tasks here (missing controllers, no writable tree), with the fix; undefined when usable. */
  problem?: string;
}

/** Controllers every task needs: a limit on one of these must never be silently dropped. */
export const REQUIRED_CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
