/* agent-test: what the agent sets up in the guest (root, volumes, network) and how commands are confined. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "net-config.h"
#include "seccomp.h"
#include "agent-test.h"

static const char *control(int fd, char type, const void *p, size_t n) {
  send_frame(fd, type, 0, p, n);
  struct frame *fr = recv_frame(fd);
  CHECK(fr->ch == 0 && fr->type == (type == F_MOUNT ? F_MOUNT_REPLY : type == F_STATS ? F_STATS_REPLY : type == F_NETWORK ? F_NETWORK_REPLY : type == F_VOLUME ? F_VOLUME_REPLY : F_HELLO_REPLY));
  return fr->data;
}

/* Runs while the agent is still `booted`: a volume needs the sandbox's root to mount into. */
void test_volume_before_mount(void) {
  int fd = conn();
  static const char v[] = "prism-vol0\0/data\0rw";
  CHECK(strcmp(control(fd, F_VOLUME, v, sizeof v), "error: rootfs not mounted yet (M comes first)") == 0);
}

void test_volume(void) {
  int fd = conn();
  static const char rw[] = "prism-vol0\0/data\0rw", ro[] = "prism-vol0\0/ro\0ro", missing[] = "prism-vol9\0/x\0ro";
  CHECK(strcmp(control(fd, F_VOLUME, rw, sizeof rw), "ok") == 0);
  CHECK(strcmp(control(fd, F_VOLUME, ro, sizeof ro), "ok") == 0);
  CHECK(strcmp(control(fd, F_VOLUME, missing, sizeof missing), "error: no disk with serial prism-vol9 (/x, ro)") == 0);
  static const char *bad[] = {"prism-vol0\0/data", "prism-vol0\0data\0rw", "prism-vol0\0/data\0rx", "\0/data\0rw", "prism-vol0\0/d\0rw\0extra"};
  static const size_t len[] = {17, 19, 20, 10, 23};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(strncmp(control(fd, F_VOLUME, bad[i], len[i]), "error: malformed V", 18) == 0);
  CHECK(strncmp(control(fd, F_VOLUME, "prism-vol0\0/data\0rw", 19), "error: malformed V", 18) == 0); /* unterminated */
}

static const char net_ok[] = "10.203.0.2/30\0" "10.203.0.1\0" "1500\0" "10.203.0.1";

void test_mount(void) {
  int fd = conn();
  CHECK(strcmp(control(fd, F_NETWORK, net_ok, sizeof net_ok), "error: N before M: the root file system is not mounted") == 0);
  CHECK(strcmp(control(fd, F_MOUNT, "fail", 5), "error: test failure") == 0);
  CHECK(strncmp(control(fd, F_MOUNT, "noterm", 6), "error: malformed M", 18) == 0);
  CHECK(strcmp(control(fd, F_HELLO, NULL, 0), "prism-agent 8 booted") == 0);
  CHECK(strncmp(control(fd, F_MOUNT, "x\0" "0\0" "0\0" "0\0" "\0" "many", 15), "error: malformed M", 18) == 0);
  /* The sixth field is every command's open-file limit, soft and hard. */
  static const char m[] = "sandbox\0" "0\0" "0\0" "0\0" "\0" "100";
  CHECK(strcmp(control(fd, F_MOUNT, m, sizeof m), "ok") == 0);
  CHECK(strcmp(control(fd, F_HELLO, NULL, 0), "prism-agent 8 ready") == 0);
  struct result r = run(fd, 1, SH("ulimit -Sn; ulimit -Hn"));
  CHECK(out_is(&r.out, "100\n100\n") && strcmp(r.exit, "0 0") == 0);
  CHECK(strcmp(control(fd, F_MOUNT, "sandbox", 8), "error: rootfs already mounted") == 0);
  CHECK(strncmp(control(fd, F_MOUNT, "x\0notanumber", 13), "error: malformed M", 18) == 0);
  CHECK(strcmp(control(fd, F_STATS, NULL, 0), "pids 0 memory 0 oom_kills 0 mem_cache 0 disk_used 0 disk_total 0") == 0);
  CHECK(strcmp(control(fd, F_NETWORK, net_ok, sizeof net_ok), "ok") == 0);
  static const char net_fail[] = "10.0.0.99/24\0" "10.0.0.1\0" "1500";
  CHECK(strcmp(control(fd, F_NETWORK, net_fail, sizeof net_fail), "error: test failure") == 0);
  CHECK(strncmp(control(fd, F_NETWORK, "10.0.0.2\0" "10.0.0.1\0" "1500", 21), "error: malformed N", 18) == 0);
}

void test_net_config_parse(void) {
  struct net_config c;
  char ok[] = "10.203.0.2/30\0" "10.203.0.1\0" "1400\0" "10.203.0.1\0" "10.203.0.5";
  CHECK(net_config_parse(ok, sizeof ok, &c) == NULL);
  CHECK(c.prefix == 30 && c.mtu == 1400 && c.nnameservers == 2 && c.gateway.s_addr == htonl(0x0acb0001));
  char none[] = "10.203.0.2/30\0" "10.203.0.1\0" "1500";
  CHECK(net_config_parse(none, sizeof none, &c) == NULL && c.nnameservers == 0);
  char noprefix[] = "10.203.0.2\0" "10.203.0.1\0" "1500";
  CHECK(net_config_parse(noprefix, sizeof noprefix, &c) != NULL);
  char badmtu[] = "10.203.0.2/30\0" "10.203.0.1\0" "15x";
  CHECK(net_config_parse(badmtu, sizeof badmtu, &c) != NULL);
  char badprefix[] = "10.203.0.2/33\0" "10.203.0.1\0" "1500";
  CHECK(net_config_parse(badprefix, sizeof badprefix, &c) != NULL);
  char unterminated[] = "10.203.0.2/30\0" "10.203.0.1\0" "1500\0" "10.203.0.1";
  CHECK(net_config_parse(unterminated, sizeof unterminated - 1, &c) != NULL);
  char many[] = "10.0.0.2/30\0" "10.0.0.1\0" "1500\0" "1.1.1.1\0" "1.1.1.2\0" "1.1.1.3\0" "1.1.1.4";
  CHECK(net_config_parse(many, sizeof many, &c) != NULL);
}

/* Commands get no_new_privs, as under oci: a setuid binary gives nothing. */
void test_no_new_privs(void) {
  int fd = conn();
  struct result r = run(fd, 1, SH("grep NoNewPrivs /proc/self/status"));
  CHECK(out_is(&r.out, "NoNewPrivs:\t1\n") && strcmp(r.exit, "0 0") == 0);
}

/* Each call's errno under the filter; -1 when the call succeeded. */
static int denied_with(long r) { return r == -1 ? errno : -1; }

/* How a child that makes an i386 call (int 0x80, getpid) from this 64-bit process ends. */
static int i386_call_status(void) {
  pid_t child = fork();
  if (child == 0) {
    long nr = 20;
    __asm__ volatile("int $0x80" : "+a"(nr) : : "memory");
    _exit(0);
  }
  int status = -1;
  if (child < 0 || waitpid(child, &status, 0) != child) return -1;
  return status;
}

/* The filter in this test's own process: what it refuses, what it lets through, what it kills. */
void test_seccomp_filter(void) {
  /* Kernels built or booted without ia32 emulation fault an int 0x80 (SIGSEGV) before seccomp sees
     it; only where the call works unfiltered can the filter be shown to kill it. */
  int unfiltered = i386_call_status();
  CHECK(unfiltered != -1);
  int ia32 = WIFEXITED(unfiltered) && WEXITSTATUS(unfiltered) == 0;
  CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && seccomp_deny_install() == 0);
  CHECK(denied_with(syscall(SYS_keyctl, 1, "prism-test")) == EPERM); /* KEYCTL_JOIN_SESSION_KEYRING */
  CHECK(denied_with(syscall(SYS_unshare, 0x10000000)) == EPERM);    /* CLONE_NEWUSER */
  CHECK(denied_with(syscall(SYS_clone, 0x10000000 | SIGCHLD, 0, 0, 0, 0)) == EPERM);
  CHECK(denied_with(syscall(SYS_clone, 0x40000000 | SIGCHLD, 0, 0, 0, 0)) == EPERM); /* CLONE_NEWNET */
  CHECK(denied_with(syscall(SYS_clone3, NULL, 0)) == ENOSYS);
  CHECK(denied_with(syscall(SYS_mount, "none", "/mnt", "tmpfs", 0, NULL)) == EPERM);
  CHECK(denied_with(syscall(SYS_finit_module, -1, "", 0)) == EPERM);
  CHECK(denied_with(syscall(SYS_bpf, 0, NULL, 0)) == EPERM);
  CHECK(syscall(SYS_getpid) == getpid() && getpid() > 0);
  /* A plain clone (fork) still works: only namespace flags are refused. */
  pid_t child = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
  if (child == 0) _exit(7);
  int status;
  CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 7);
  /* An i386 call from the 64-bit process: a foreign architecture, killed by the filter. Without ia32
     emulation it must still not succeed, and ends as it did unfiltered. */
  int filtered = i386_call_status();
  if (ia32) CHECK(WIFSIGNALED(filtered) && WTERMSIG(filtered) == SIGSYS);
  else CHECK(filtered == unfiltered && !(WIFEXITED(filtered) && WEXITSTATUS(filtered) == 0));
}

/* Commands run filtered; root ones with oci's capability bound (Docker's 0xa80425fb). */
void test_command_confinement(void) {
  int fd = conn();
  struct result r = run(fd, 1, SH("grep -E '^(CapBnd|Seccomp):' /proc/self/status"));
  CHECK(strcmp(r.exit, "0 0") == 0);
  CHECK(getuid() != 0 || out_is(&r.out, "CapBnd:\t00000000a80425fb\nSeccomp:\t2\n"));
  CHECK(memmem(r.out.data, r.out.len, "Seccomp:\t2\n", 11) != NULL);
  /* The filter is inherited: a shell's child is refused too. */
  r = run(fd, 2, SH("unshare -U true 2>/dev/null || echo refused"));
  CHECK(out_is(&r.out, "refused\n"));
  if (getuid() != 0) return;
  /* What package managers need as root stays: chown, and dropping to another user (apt's _apt). */
  r = run(fd, 3, SH("t=$(mktemp) && chown 65534:65533 $t && stat -c '%u %g' $t; rm -f $t; setpriv --reuid 65534 --regid 65533 --clear-groups id -u"));
  CHECK(out_is(&r.out, "65534 65533\n65534\n") && strcmp(r.exit, "0 0") == 0);
}
