/*
 * agent-test: unit tests of the codecs, then the agent core (agent.c, session.c) served on a unix
 * socket in a child process, driven frame by frame the way prismd drives the virtio port. boot.c's
 * seams are replaced below: port_reconnect accepts the next test's connection, so every test also
 * exercises disconnect and reconnect. Each test runs in its own process; `make test` fails if any does.
 * This file holds the seams and the runner; the client is agent-test-client.c, the tests are in
 * agent-test-codec.c, agent-test-sessions.c and agent-test-guest.c (declared in agent-test.h).
 */
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

struct sockaddr_un agent_addr = {.sun_family = AF_UNIX};
static int listen_fd = -1;
char oom_file[64];

/* ---- seams (boot.c in the VM) ---- */

int port_reconnect(int previous) {
  if (previous >= 0) close(previous);
  return accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int rootfs_mount(const char *hostname, const struct limits *lim, char *err, size_t errlen) {
  (void)lim;
  if (strcmp(hostname, "fail") != 0) return 0;
  snprintf(err, errlen, "test failure");
  return -1;
}

int volume_mount(const char *serial, const char *path, int read_only, char *err, size_t errlen) {
  if (strcmp(serial, "prism-vol0") == 0) return 0;
  snprintf(err, errlen, "no disk with serial %s (%s, %s)", serial, path, read_only ? "ro" : "rw");
  return -1;
}

/* The VM's NIC is not here: 10.0.0.99 stands for a guest that cannot take its address. */
int guest_network(const struct net_config *c, char *err, size_t errlen) {
  if (c->address.s_addr != htonl(0x0a000063)) return 0;
  snprintf(err, errlen, "test failure");
  return -1;
}

/* The test build has no clock to set: it logs what it was given, for the tests to read. */
void host_refresh(const struct limits *lim) {
  agent_log("host facts: time %llu, %zu seed bytes", lim->time_ms, lim->seed_len);
}

void sandbox_stats(char *out, size_t n) {
  snprintf(out, n, "pids 0 memory 0 oom_kills 0 mem_cache 0 disk_used 0 disk_total 0");
}

unsigned long long sandbox_oom_kills(void) {
  FILE *f = fopen(oom_file, "re");
  unsigned long long n = 0;
  if (f && fscanf(f, "%llu", &n) != 1) n = 0;
  if (f) fclose(f);
  return n;
}

void power_off(struct agent *a) {
  (void)a;
  exit(0);
}


struct test {
  const char *name;
  void (*fn)(void);
};
static const struct test tests[] = {
    {"frame codec", test_frame_codec}, {"start parse", test_start_parse}, {"user parse", test_user_parse}, {"size parse", test_size_parse},
    {"hello booted", test_hello_booted}, {"echo", test_echo}, {"exit codes", test_exit_codes},
    {"stderr separate", test_stderr_separate}, {"stdin via cat", test_stdin_cat},
    {"cwd env user", test_cwd_env_user}, {"oom kill in the exit frame", test_oom_in_exit}, {"10 MiB output", test_big_output},
    {"20 concurrent sessions", test_concurrent}, {"kill", test_kill}, {"terminal sessions", test_pty}, {"malformed frames", test_malformed},
    {"command not found", test_not_found}, {"background output not waited for", test_background},
    {"slow consumers", test_slow_consumers}, {"output window", test_window}, {"host not reading", test_host_not_reading},
    {"session limit", test_session_limit}, {"disconnect kills sessions", test_disconnect_kills},
    {"detach keeps sessions", test_detach_keeps_sessions},
    {"net config parse", test_net_config_parse}, {"no_new_privs", test_no_new_privs},
    {"seccomp filter", test_seccomp_filter}, {"command confinement", test_command_confinement},
    {"volume before mount", test_volume_before_mount}, {"mount", test_mount}, {"volume", test_volume}, {"quit", test_quit},
};

static pid_t start_agent(void) {
  snprintf(agent_addr.sun_path, sizeof agent_addr.sun_path, "/tmp/prism-agent-test.%d.sock", getpid());
  snprintf(oom_file, sizeof oom_file, "/tmp/prism-agent-test.%d.oom", getpid());
  unlink(agent_addr.sun_path);
  listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&agent_addr, sizeof agent_addr) < 0 || listen(listen_fd, 8) < 0) {
    perror("agent-test: listen");
    exit(2);
  }
  pid_t pid = fork();
  if (pid == 0) {
    struct agent a;
    agent_log_fd = getenv("AGENT_TEST_LOG") ? 2 : -1;
    if (agent_init(&a) < 0) _exit(3);
    a.max_sessions = TEST_MAX_SESSIONS;
    agent_serve(&a);
  }
  close(listen_fd);
  return pid;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  pid_t agent = start_agent();
  int failed = 0;
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    long t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
      alarm(60);
      tests[i].fn();
      exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    failed += !ok;
    printf("%s  %-36s %5ld ms\n", ok ? "ok  " : "FAIL", tests[i].name, now_ms() - t0);
    fflush(stdout);
  }
  int status = 0;
  long t0 = now_ms();
  while (waitpid(agent, &status, WNOHANG) == 0 && now_ms() - t0 < 2000) usleep(10000);
  if (now_ms() - t0 >= 2000) {
    printf("FAIL  agent still running after Q\n");
    kill(agent, SIGKILL);
    waitpid(agent, &status, 0);
    failed++;
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    printf("FAIL  agent exited abnormally (status %#x)\n", status);
    failed++;
  }
  unlink(agent_addr.sun_path);
  unlink(oom_file);
  printf("%s: %zu tests, %d failed\n", failed ? "FAIL" : "PASS", sizeof tests / sizeof tests[0], failed);
  return failed != 0;
}
