/*
 * A classic-BPF seccomp program, assembled here because musl has no <linux/seccomp.h> and libseccomp
 * would be a second static library in the initramfs for 60 comparisons. The deny list and its
 * reasons are those of src/runtime/oci/seccomp-profile.ts; keep the two in step.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "seccomp.h"

#if !defined(__x86_64__)
#error "the guest filter lists x86_64 syscall numbers"
#endif

/* The kernel's ABI (linux/filter.h, linux/seccomp.h, linux/audit.h), stable since 3.5. */
struct sock_filter {
  uint16_t code;
  uint8_t jt, jf;
  uint32_t k;
};
struct sock_fprog {
  unsigned short len;
  struct sock_filter *filter;
};
struct seccomp_data {
  int nr;
  uint32_t arch;
  uint64_t instruction_pointer;
  uint64_t args[6];
};
#define BPF_LD_W_ABS 0x20 /* BPF_LD | BPF_W | BPF_ABS */
#define BPF_JEQ_K 0x15    /* BPF_JMP | BPF_JEQ | BPF_K */
#define BPF_JGE_K 0x35    /* BPF_JMP | BPF_JGE | BPF_K */
#define BPF_JSET_K 0x45   /* BPF_JMP | BPF_JSET | BPF_K */
#define BPF_RET_K 0x06    /* BPF_RET | BPF_K */
#define SECCOMP_MODE_FILTER 2
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#define SECCOMP_RET_ERRNO 0x00050000U
#define SECCOMP_RET_ALLOW 0x7fff0000U
#define AUDIT_ARCH_X86_64 0xc000003eU
#define X32_SYSCALL_BIT 0x40000000U

#ifndef __NR_quotactl_fd
#define __NR_quotactl_fd 443
#endif

static const uint32_t denied[] = {
  /* mounts and the new mount API */
  __NR_mount, __NR_umount2, __NR_pivot_root, __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick,
  __NR_move_mount, __NR_open_tree, __NR_mount_setattr,
  /* namespaces (clone's namespace flags below) */
  __NR_unshare, __NR_setns,
  /* kernel code and boot */
  __NR_kexec_load, __NR_kexec_file_load, __NR_init_module, __NR_finit_module, __NR_delete_module,
  __NR_reboot, __NR_bpf, __NR_perf_event_open, __NR_userfaultfd, __NR_lookup_dcookie, __NR_uselib,
  __NR_create_module, __NR_get_kernel_syms, __NR_query_module, __NR_nfsservctl, __NR_iopl, __NR_ioperm,
  /* keyrings */
  __NR_keyctl, __NR_add_key, __NR_request_key,
  /* machine-global state */
  __NR_swapon, __NR_swapoff, __NR_acct, __NR_quotactl, __NR_quotactl_fd, __NR_syslog,
  __NR_clock_settime, __NR_clock_adjtime, __NR_settimeofday, __NR_adjtimex,
  /* file handles bypass path-based confinement */
  __NR_open_by_handle_at, __NR_name_to_handle_at,
  /* cross-process memory access and inspection */
  __NR_process_vm_readv, __NR_process_vm_writev, __NR_kcmp,
};
#define NDENIED (sizeof denied / sizeof denied[0])

/* CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET: the low word of clone's flags. */
#define CLONE_NAMESPACES 0x7e020000U

/*
 * Layout: arch check, x32 check, one comparison per denied syscall, clone and clone3, then the
 * return blocks the comparisons jump forward to. A foreign architecture (i386 through int 0x80, x32)
 * is killed rather than refused: a deny list in x86_64 numbers says nothing about its numbers, and a
 * process whose every call fails with EPERM, exit included, would spin.
 */
enum {
  I_ARCH = 1,
  I_NR = 2,
  I_X32 = 3,
  I_DENY = 4,
  I_CLONE = I_DENY + NDENIED,
  I_CLONE3,
  I_ALLOW,
  I_CLONE_FLAGS,
  I_CLONE_NS,
  I_ALLOW2,
  I_EPERM,
  I_ENOSYS,
  I_KILL,
  PROG_LEN,
};

#define STMT(c, v) ((struct sock_filter){(c), 0, 0, (v)})
/* Jump offsets count from the next instruction; every target here lies ahead. */
#define JUMP(at, c, v, t, f) ((struct sock_filter){(c), (uint8_t)((t) - (at) - 1), (uint8_t)((f) - (at) - 1), (v)})

int seccomp_deny_install(void) {
  struct sock_filter p[PROG_LEN];
  p[0] = STMT(BPF_LD_W_ABS, offsetof(struct seccomp_data, arch));
  p[I_ARCH] = JUMP(I_ARCH, BPF_JEQ_K, AUDIT_ARCH_X86_64, I_NR, I_KILL);
  p[I_NR] = STMT(BPF_LD_W_ABS, offsetof(struct seccomp_data, nr));
  p[I_X32] = JUMP(I_X32, BPF_JGE_K, X32_SYSCALL_BIT, I_KILL, I_DENY);
  for (unsigned i = 0; i < NDENIED; i++) p[I_DENY + i] = JUMP(I_DENY + i, BPF_JEQ_K, denied[i], I_EPERM, I_DENY + i + 1);
  p[I_CLONE] = JUMP(I_CLONE, BPF_JEQ_K, __NR_clone, I_CLONE_FLAGS, I_CLONE3);
  /* clone3 passes its flags in memory a filter cannot read; ENOSYS makes libc fall back to clone. */
  p[I_CLONE3] = JUMP(I_CLONE3, BPF_JEQ_K, __NR_clone3, I_ENOSYS, I_ALLOW);
  p[I_ALLOW] = STMT(BPF_RET_K, SECCOMP_RET_ALLOW);
  /* The kernel reads only the low 32 bits of clone's flags, where the namespace bits are (little-endian). */
  p[I_CLONE_FLAGS] = STMT(BPF_LD_W_ABS, offsetof(struct seccomp_data, args[0]));
  p[I_CLONE_NS] = JUMP(I_CLONE_NS, BPF_JSET_K, CLONE_NAMESPACES, I_EPERM, I_ALLOW2);
  p[I_ALLOW2] = STMT(BPF_RET_K, SECCOMP_RET_ALLOW);
  p[I_EPERM] = STMT(BPF_RET_K, SECCOMP_RET_ERRNO | EPERM);
  p[I_ENOSYS] = STMT(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS);
  p[I_KILL] = STMT(BPF_RET_K, SECCOMP_RET_KILL_PROCESS);
  _Static_assert(PROG_LEN - I_DENY < 256, "BPF jump offsets are 8 bits");
  struct sock_fprog prog = {.len = PROG_LEN, .filter = p};
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

/* oci's default capabilities (src/runtime/oci/runtime-spec.ts), Docker's set, by number. */
static int in_task_set(int cap) {
  static const int keep[] = {
    0,  /* CHOWN */
    1,  /* DAC_OVERRIDE */
    3,  /* FOWNER */
    4,  /* FSETID */
    5,  /* KILL */
    6,  /* SETGID */
    7,  /* SETUID */
    8,  /* SETPCAP */
    10, /* NET_BIND_SERVICE */
    13, /* NET_RAW */
    18, /* SYS_CHROOT */
    27, /* MKNOD */
    29, /* AUDIT_WRITE */
    31, /* SETFCAP */
  };
  for (unsigned i = 0; i < sizeof keep / sizeof keep[0]; i++)
    if (keep[i] == cap) return 1;
  return 0;
}

int caps_bound_to_task_set(void) {
  /* EINVAL past the kernel's last capability ends the walk. */
  for (int cap = 0; cap < 64; cap++) {
    if (in_task_set(cap)) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return errno == EINVAL && cap > 0 ? 0 : -1;
  }
  return 0;
}
