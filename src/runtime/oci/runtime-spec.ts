import { TASK_INIT_PATH, type TaskSpec } from '../driver.js';
import { defaultSeccompProfile } from './seccomp-profile.js';

/** Where the init binary appears inside every task. */
export const INIT_PATH = TASK_INIT_PATH;


/** Docker's default capability set. */
const CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

/** Docker's masked and read-only paths: host information and knobs a task must not see or turn. */
const MASKED_PATHS = [
  '/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats',
  '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
  '/sys/devices/virtual/powercap',
];
const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export interface OciProcess {
  terminal: boolean;
  user: { uid: number; gid: number };
  args: string[];
  env: string[];
  cwd: string;
  capabilities: Record<'bounding' | 'effective' | 'permitted', string[]>;
  rlimits: Array<{ type: string; hard: number; soft: number }>;
  noNewPrivileges: boolean;
}

/**
 * The process of the task's init or of one exec. Exec passes it whole with `runc exec --process`,
 * because `--env` would only add to the init's environment and ExecOptions.env must be complete.
 */
export function buildProcess(args: string[], env: Record<string, string>, cwd: string, maxOpenFiles: number): OciProcess {
  return {
    terminal: false,
    user: { uid: 0, gid: 0 },
    args,
    env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    cwd,
    capabilities: { bounding: CAPABILITIES, effective: CAPABILITIES, permitted: CAPABILITIES },
    // Soft = hard: without CAP_SYS_RESOURCE (not granted) no process of the task can raise it, and
    // every command inherits it from init through fork.
    rlimits: [{ type: 'RLIMIT_NOFILE', hard: maxOpenFiles, soft: maxOpenFiles }],
    noNewPrivileges: true,
  };
}

export interface RuntimeSpecInput {
  spec: TaskSpec;
  /** Absolute path of the mounted overlay. */
  rootfs: string;
  initBinary: string;
  /**
   * The task's cgroup as the host's cgroups name it (cgroups/): runc's cgroupsPath; whether swap is
   * accounted (only then may memory.swap be set); whether the task gets its own cgroup namespace
   * (cgroup v2, as Docker does: the task sees its own cgroup as the root of /sys/fs/cgroup).
   */
  cgroups: { path: string; swapAccounting: boolean; namespace: boolean };
  /** With `spec.network`: the host file bind-mounted read-only as the task's /etc/resolv.conf. */
  resolvConf?: string;
  /** Host directories (mounted volumes) bind-mounted into the task, in TaskSpec.volumes order. */
  volumes?: Array<{ source: string; destination: string; readOnly: boolean }>;
}

export const CPU_PERIOD_US = 100_000;

/** The CFS quota per CPU_PERIOD_US for `cpus` (at least 1 ms, the kernel's floor). */
export function cpuQuotaUs(cpus: number): number {
  return Math.max(1000, Math.round(cpus * CPU_PERIOD_US));
}

/** Builds config.json (OCI runtime spec 1.0.2) for a task. */
export function buildRuntimeSpec(input: RuntimeSpecInput): Record<string, unknown> {
  const { spec } = input;
  const memoryBytes = spec.memoryMb * 1024 * 1024;
  return {
    ociVersion: '1.0.2',
    process: buildProcess([INIT_PATH], spec.env, spec.workdir, spec.maxOpenFiles),
    root: { path: input.rootfs, readonly: false },
    hostname: spec.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      {
        destination: '/dev/pts', type: 'devpts', source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      // runc creates the (empty) target file in the writable layer; the binary itself stays on the host.
      { destination: INIT_PATH, type: 'bind', source: input.initBinary, options: ['bind', 'ro', 'nosuid', 'nodev'] },
      ...(spec.network && input.resolvConf
        ? [{ destination: '/etc/resolv.conf', type: 'bind', source: input.resolvConf, options: ['bind', 'ro', 'nosuid', 'nodev', 'noexec'] }]
        : []),
      // runc resolves the destination inside the rootfs (symlinks cannot lead out) and creates it if missing.
      ...(input.volumes ?? []).map((v) => ({ destination: v.destination, type: 'bind', source: v.source, options: ['bind', v.readOnly ? 'ro' : 'rw', 'nosuid', 'nodev'] })),
    ],
    linux: {
      cgroupsPath: input.cgroups.path,
      // A prepared namespace (veth, address, route) when the sandbox has a network; else a new one with only lo.
      namespaces: [
        { type: 'pid' }, { type: 'mount' }, { type: 'ipc' }, { type: 'uts' },
        spec.network ? { type: 'network', path: spec.network.netnsPath } : { type: 'network' },
        ...(input.cgroups.namespace ? [{ type: 'cgroup' }] : []),
      ],
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory: input.cgroups.swapAccounting ? { limit: memoryBytes, swap: memoryBytes } : { limit: memoryBytes },
        cpu: { quota: cpuQuotaUs(spec.cpus), period: CPU_PERIOD_US },
        pids: { limit: spec.pidsLimit },
      },
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
      seccomp: defaultSeccompProfile(),
    },
  };
}
