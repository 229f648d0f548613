/**
 * The default seccomp profile of oci tasks: allow everything except the syscalls that reach kernel
 * surfaces a sandbox never needs and that recur in container escapes (mount and namespace games,
 * module loading, kexec, bpf, keyrings, cross-process memory access). Without CAP_SYS_ADMIN most of
 * these already fail; the filter is defence in depth and also closes unprivileged user namespaces,
 * which capabilities alone do not.
 */

const EPERM = 1;
const ENOSYS = 38;

const DENIED_SYSCALLS = [
  // mounts and new mount API
  'mount', 'umount', 'umount2', 'pivot_root', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'move_mount',
  'open_tree', 'mount_setattr',
  // namespaces
  'unshare', 'setns',
  // kernel code and boot
  'kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module', 'reboot',
  'bpf', 'perf_event_open', 'userfaultfd', 'lookup_dcookie', 'uselib', 'create_module',
  'get_kernel_syms', 'query_module', 'nfsservctl', 'vm86', 'vm86old', 'iopl', 'ioperm',
  // keyrings are not namespaced
  'keyctl', 'add_key', 'request_key',
  // host-global state
  'swapon', 'swapoff', 'acct', 'quotactl', 'quotactl_fd', 'syslog', 'clock_settime', 'clock_settime64',
  'clock_adjtime', 'clock_adjtime64', 'settimeofday', 'stime', 'adjtimex',
  // file handles bypass path-based confinement (the "shocker" escape)
  'open_by_handle_at', 'name_to_handle_at',
  // cross-process inspection
  'process_vm_readv', 'process_vm_writev', 'kcmp',
];

/** clone(2) flags that create namespaces; CLONE_NEWUSER is the one unprivileged code can use. */
const CLONE_NAMESPACE_FLAGS = [
  0x00020000, // CLONE_NEWNS
  0x02000000, // CLONE_NEWCGROUP
  0x04000000, // CLONE_NEWUTS
  0x08000000, // CLONE_NEWIPC
  0x10000000, // CLONE_NEWUSER
  0x20000000, // CLONE_NEWPID
  0x40000000, // CLONE_NEWNET
];

export interface SeccompProfile {
  defaultAction: string;
  architectures: string[];
  syscalls: Array<{
    names: string[];
    action: string;
    errnoRet?: number;
    args?: Array<{ index: number; value: number; valueTwo: number; op: string }>;
  }>;
}

/**
 * `personality` stays allowed: Docker allows its common values,
 * tools such as setarch and some language runtimes query it, and it only affects the caller.
 * `ptrace` stays allowed (as in Docker on kernels >= 4.8): without CAP_SYS_PTRACE it only reaches
 * the task's own processes, and strace/gdb are legitimate tools in a sandbox.
 */
export function defaultSeccompProfile(): SeccompProfile {
  return {
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    syscalls: [
      { names: DENIED_SYSCALLS, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      // Each rule matches when one namespace bit is set; rules for one syscall are OR-ed.
      ...CLONE_NAMESPACE_FLAGS.map((flag) => ({
        names: ['clone'],
        action: 'SCMP_ACT_ERRNO',
        errnoRet: EPERM,
        args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
      })),
      // clone3 passes flags in memory that seccomp cannot inspect; ENOSYS makes libc fall back to clone.
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    ],
  };
}
