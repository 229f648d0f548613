/* agent-test: the agent over a socket: commands, output, windows, terminals, kills, disconnects. */
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

void test_hello_booted(void) {
  int fd = conn();
  send_frame(fd, 'Z', 0, "junk", 4); /* unknown control frame: ignored */
  send_frame(fd, F_HELLO, 0, NULL, 0);
  struct frame *fr = recv_frame(fd);
  CHECK(fr->type == F_HELLO_REPLY && fr->ch == 0 && strcmp(fr->data, "prism-agent 8 booted") == 0);
}

void test_echo(void) {
  int fd = conn();
  struct result r = run(fd, 1, ARGV("echo", "hi"));
  CHECK(out_is(&r.out, "hi\n") && r.err.len == 0 && strcmp(r.exit, "0 0") == 0);
}

void test_exit_codes(void) {
  int fd = conn();
  CHECK(strcmp(run(fd, 1, SH("exit 3")).exit, "3 0") == 0);
  CHECK(strcmp(run(fd, 2, SH("kill -TERM $$")).exit, "143 15") == 0);
  CHECK(strcmp(run(fd, 3, ARGV("false")).exit, "1 0") == 0);
}

void test_stderr_separate(void) {
  int fd = conn();
  struct result r = run(fd, 7, SH("echo out; echo err >&2; echo out2"));
  CHECK(out_is(&r.out, "out\nout2\n") && out_is(&r.err, "err\n") && strcmp(r.exit, "0 0") == 0);
}

void test_stdin_cat(void) {
  int fd = conn();
  struct result r;
  start(fd, 5, 1, ARGV("cat"));
  send_frame(fd, F_STDIN, 5, "hello ", 6);
  send_frame(fd, F_STDIN, 5, "world", 5);
  send_frame(fd, F_CLOSE, 5, NULL, 0);
  send_frame(fd, F_STDIN, 5, "late", 4); /* after C: ignored */
  collect(fd, 5, 1, &r);
  CHECK(out_is(&r.out, "hello world") && strcmp(r.exit, "0 0") == 0);
}

void test_cwd_env_user(void) {
  int fd = conn();
  struct result r;
  send_start(fd, 1, "/tmp", 0, ARGV("pwd"), NULL, "");
  collect(fd, 1, 1, &r);
  CHECK(out_is(&r.out, "/tmp\n"));
  send_start(fd, 2, "", 0, SH("echo $FOO; pwd"), ARGV(path_env[0], "FOO=bar"), "");
  collect(fd, 2, 1, &r);
  CHECK(out_is(&r.out, "bar\n/\n"));
  if (getuid() != 0) return;
  send_start(fd, 3, "", 0, SH("id -u; id -g; id -G"), path_env, "65534 65533 65532,65531");
  collect(fd, 3, 1, &r);
  CHECK(out_is(&r.out, "65534\n65533\n65533 65531 65532\n") || out_is(&r.out, "65534\n65533\n65533 65532 65531\n"));
}

void test_big_output(void) {
  int fd = conn();
  struct result r = run(fd, 9, ARGV("head", "-c", "10485760", "/dev/zero"));
  CHECK(r.out.len == 10485760 && strcmp(r.exit, "0 0") == 0);
  for (size_t i = 0; i < r.out.len; i++) CHECK(r.out.data[i] == 0);
}

/* 20 cats fed round-robin in small pieces: every byte reaches its own session, in order. */
void test_concurrent(void) {
  int fd = conn();
  struct result r[20];
  char piece[64], want[20][2048] = {{0}};
  for (int c = 0; c < 20; c++) start(fd, 100 + (uint32_t)c, 1, ARGV("cat"));
  for (int round = 0; round < 50; round++) {
    for (int c = 0; c < 20; c++) {
      int n = snprintf(piece, sizeof piece, "ch%d.%d;", c, round);
      send_frame(fd, F_STDIN, 100 + (uint32_t)c, piece, (size_t)n);
      strcat(want[c], piece);
    }
  }
  for (int c = 19; c >= 0; c--) send_frame(fd, F_CLOSE, 100 + (uint32_t)c, NULL, 0);
  collect(fd, 100, 20, r);
  for (int c = 0; c < 20; c++) CHECK(out_is(&r[c].out, want[c]) && strcmp(r[c].exit, "0 0") == 0);
}

void test_kill(void) {
  int fd = conn();
  struct result r;
  start(fd, 4, 0, ARGV("sleep", "100"));
  usleep(50000);
  send_frame(fd, F_KILL, 4, "\x09", 1);
  collect(fd, 4, 1, &r);
  CHECK(strcmp(r.exit, "137 9") == 0);
  start(fd, 5, 0, SH("sleep 100 & wait"));
  usleep(50000);
  send_frame(fd, F_KILL, 5, "\x0f", 1); /* SIGTERM to the group: sh and its sleep */
  collect(fd, 5, 1, &r);
  CHECK(strcmp(r.exit, "143 15") == 0);
  send_frame(fd, F_KILL, 5, "\x09", 1); /* the session is over: ignored, no second X */
  CHECK(strcmp(run(fd, 6, ARGV("true")).exit, "0 0") == 0);
}

/* The pid of a process on this host whose command line is exactly `argv` (NULL-terminated); 0 if none. */
static pid_t pid_of(const char **argv) {
  char want[256], path[300], buf[256];
  size_t wl = 0;
  for (int i = 0; argv[i]; i++) {
    size_t l = strlen(argv[i]) + 1;
    CHECK(wl + l <= sizeof want);
    memcpy(want + wl, argv[i], l);
    wl += l;
  }
  DIR *d = opendir("/proc");
  struct dirent *e;
  pid_t found = 0;
  while (d && !found && (e = readdir(d))) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    FILE *f = fopen(path, "re");
    if (!f) continue;
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (got == wl && memcmp(buf, want, wl) == 0) found = (pid_t)atoi(e->d_name);
  }
  if (d) closedir(d);
  return found;
}

/* Whether a process whose command line is `a` then `b` (two arguments) runs on this host. */
static int running(const char *a, const char *b) { return pid_of(ARGV(a, b)) != 0; }

/* Whether `pid` sleeps in a write to a full pipe (its wchan, e.g. anon_pipe_write). */
static int in_pipe_write(pid_t pid) {
  char path[64], wchan[64] = "";
  snprintf(path, sizeof path, "/proc/%d/wchan", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  size_t got = fread(wchan, 1, sizeof wchan - 1, f);
  fclose(f);
  wchan[got] = 0;
  return strstr(wchan, "pipe_write") != NULL;
}

/* P: a terminal on fds 0-2 of the asked size, R resizes it, C is ignored, stderr stays empty. */
void test_pty(void) {
  int fd = conn();
  struct result r;
  send_start_on(fd, 8, LIT("80\00024\0"), "", 1, SH("test -t 0 && test -t 1 && test -t 2 && echo tty; stty size; read x; stty size; exit 3"), path_env, "");
  struct buf first = {0};
  while (!memmem(first.data, first.len, "24 80\r\n", 7)) {
    struct frame *fr = recv_frame(fd);
    CHECK(fr->ch == 8 && fr->type == F_STDOUT);
    buf_append(&first, fr->data, fr->len);
  }
  CHECK(memmem(first.data, first.len, "tty\r\n24 80\r\n", 12));
  send_frame(fd, F_CLOSE, 8, NULL, 0);
  send_frame(fd, F_RESIZE, 8, LIT("100\00030\0"));
  send_frame(fd, F_STDIN, 8, "go\n", 3);
  collect(fd, 8, 1, &r);
  buf_append(&r.out, "", 1);
  CHECK(strstr(r.out.data, "go\r\n30 100\r\n"));
  CHECK(r.err.len == 0 && strcmp(r.exit, "3 0") == 0);
  /*
   * ^C through the line discipline reaches the foreground group: sh and its sleep. Sent once sleep
   * has exec'd: a SIGINT between fork and exec would land in the shell's handler and be lost.
   */
  send_start_on(fd, 9, LIT("80\00024\0"), "", 1, SH("sleep 4711; echo not reached"), path_env, "");
  for (long t0 = now_ms(); !running("sleep", "4711"); usleep(10000)) CHECK(now_ms() - t0 < 10000);
  send_frame(fd, F_STDIN, 9, "\x03", 1);
  collect(fd, 9, 1, &r);
  CHECK(strcmp(r.exit, "130 2") == 0);
}

/* X says "oom" only for a SIGKILL while the cgroup's oom_kill counter went up. */
void test_oom_in_exit(void) {
  int fd = conn();
  char script[160];
  snprintf(script, sizeof script, "echo 1 > %s; kill -KILL $$", oom_file);
  CHECK(strcmp(run(fd, 1, SH(script)).exit, "137 9 oom") == 0);
  CHECK(strcmp(run(fd, 2, SH("kill -KILL $$")).exit, "137 9") == 0); /* counter unchanged */
  snprintf(script, sizeof script, "echo 2 > %s; kill -TERM $$", oom_file);
  CHECK(strcmp(run(fd, 3, SH(script)).exit, "143 15") == 0); /* not a SIGKILL */
  snprintf(script, sizeof script, "echo 3 > %s", oom_file);
  CHECK(strcmp(run(fd, 4, SH(script)).exit, "0 0") == 0);
  start(fd, 5, 0, ARGV("sleep", "100"));
  usleep(50000);
  send_frame(fd, F_KILL, 5, "\x09", 1); /* killed by the host, counter unchanged */
  struct result r;
  collect(fd, 5, 1, &r);
  CHECK(strcmp(r.exit, "137 9") == 0);
}

static void expect_fail(int fd, uint32_t ch, const char *why) {
  struct result r;
  collect(fd, ch, 1, &r);
  CHECK(strcmp(r.exit, "126 0") == 0 && r.out.len == 0);
  buf_append(&r.err, "", 1);
  CHECK(strstr(r.err.data, why) != NULL);
}

void test_malformed(void) {
  int fd = conn();
  send_frame(fd, 'Z', 1, "x", 1);
  expect_fail(fd, 1, "unknown frame type");
  send_frame(fd, F_START, 2, LIT("/\0"));
  expect_fail(fd, 2, "missing cwd or stdin");
  send_frame(fd, F_START, 3, LIT("\0\0009\0echo\0hi\0000\0\0"));
  expect_fail(fd, 3, "argc");
  send_frame(fd, F_START, 4, LIT("\0\0001\0true\0000\0bogus\0"));
  expect_fail(fd, 4, "malformed user");
  send_frame(fd, F_STDIN, 77, "x", 1); /* I on a channel without a session: ignored */
  send_frame(fd, F_START, 0x90000000u, "", 0);
  expect_fail(fd, 0x90000000u, "channel number");
  /* Bad K on a running session: the session ends with 126, its command is killed. */
  start(fd, 5, 1, ARGV("cat"));
  send_frame(fd, F_KILL, 5, "\x09\x09", 2);
  expect_fail(fd, 5, "K wants one byte");
  start(fd, 6, 0, ARGV("sleep", "100"));
  start(fd, 6, 0, ARGV("true"));
  expect_fail(fd, 6, "already in use");
  start(fd, 7, 0, ARGV("sleep", "100"));
  send_frame(fd, F_WINDOW, 7, "\0\0\0\1", 4);
  expect_fail(fd, 7, "W wants 8 bytes");
  send_window(fd, 78, 1); /* W on a channel without a session: ignored */
  /* Over 1 MiB: answered, then skipped, and the stream stays in sync. */
  size_t big = 2u << 20;
  char *junk = calloc(1, big);
  send_frame(fd, F_STDIN, 8, junk, big);
  free(junk);
  expect_fail(fd, 8, "longer than 1 MiB");
  struct result r = run(fd, 9, ARGV("echo", "still", "here"));
  CHECK(out_is(&r.out, "still here\n") && strcmp(r.exit, "0 0") == 0);
}

void test_not_found(void) {
  int fd = conn();
  struct result r = run(fd, 1, ARGV("no-such-command-prism"));
  buf_append(&r.err, "", 1);
  CHECK(strcmp(r.exit, "127 0") == 0 && strstr(r.err.data, "cannot run no-such-command-prism"));
  r = run(fd, 2, ARGV("/etc/passwd")); /* not executable */
  CHECK(strcmp(r.exit, "126 0") == 0);
  send_start(fd, 3, "/no/such/dir", 0, ARGV("true"), path_env, "");
  collect(fd, 3, 1, &r);
  CHECK(strcmp(r.exit, "126 0") == 0);
}

/* Output that background processes write after the command exited is not waited for. */
void test_background(void) {
  int fd = conn();
  long t0 = now_ms();
  struct result r = run(fd, 1, SH("(sleep 1; echo late) & echo now"));
  CHECK(out_is(&r.out, "now\n") && strcmp(r.exit, "0 0") == 0 && now_ms() - t0 < 900);
}

void test_slow_consumers(void) {
  int fd = conn();
  /* A command that never reads its stdin, with 1 MiB waiting for it. */
  start(fd, 1, 1, ARGV("sleep", "100"));
  char *mb = calloc(1, 1u << 20);
  send_frame(fd, F_STDIN, 1, mb, 1u << 20);
  free(mb);
  /* A command flooding output without end: one started after it still gets its turn. */
  start(fd, 2, 0, ARGV("cat", "/dev/zero"));
  usleep(100000);
  start(fd, 3, 0, ARGV("echo", "quick"));
  size_t flood = 0;
  for (int done = 0; !done;) {
    struct frame *fr = recv_frame(fd);
    CHECK(fr->type != F_EXIT || fr->ch == 3);
    if (fr->ch == 2) flood += fr->len;
    done = fr->ch == 3 && fr->type == F_EXIT;
  }
  CHECK(flood > 0);
  send_frame(fd, F_KILL, 1, "\x09", 1);
  send_frame(fd, F_KILL, 2, "\x09", 1);
  for (int exits = 0; exits < 2;) {
    struct frame *fr = recv_frame(fd);
    CHECK(fr->ch == 1 || fr->ch == 2);
    if (fr->type == F_EXIT) CHECK(strcmp(fr->data, "137 9") == 0 && ++exits);
  }
}

/*
 * Without a W the command is held at the first window, to the byte; W lets the rest through. A
 * stale W (a smaller limit, as after a reconnect) takes nothing back.
 */
void test_window(void) {
  int fd = conn();
  start(fd, 1, 0, SH("head -c 3145728 /dev/zero; echo done >&2"));
  size_t got = 0;
  while (got < OUT_WINDOW) {
    struct frame *fr = recv_frame(fd);
    CHECK(fr->ch == 1 && fr->type == F_STDOUT);
    got += fr->len;
  }
  struct pollfd pf = {fd, POLLIN, 0};
  CHECK(got == OUT_WINDOW && poll(&pf, 1, 500) == 0);
  send_window(fd, 1, OUT_WINDOW + 1000);
  send_window(fd, 1, 10); /* ignored */
  for (got = 0; got < 1000;) {
    struct frame *fr = recv_frame(fd);
    CHECK(fr->ch == 1 && fr->type == F_STDOUT);
    got += fr->len;
  }
  CHECK(got == 1000 && poll(&pf, 1, 300) == 0);
  send_window(fd, 1, 3145728 + 5);
  struct result r;
  collect(fd, 1, 1, &r);
  CHECK(r.out.len == 3145728 - OUT_WINDOW - 1000 && out_is(&r.err, "done\n") && strcmp(r.exit, "0 0") == 0);
}

/*
 * A host that grants a window it does not read: the agent's own buffer stops the pipes at its limit,
 * and it keeps serving input (here, K), never blocking on a write.
 */
void test_host_not_reading(void) {
  int fd = conn();
  struct result r;
  start(fd, 1, 0, ARGV("head", "-c", "104857600", "/dev/zero"));
  send_window(fd, 1, UINT64_MAX);
  /* Paused pipes leave the writer asleep on a full pipe; wait for that to hold (however busy the host is). */
  pid_t head = 0;
  for (int i = 0; i < 500 && !(head = pid_of(ARGV("head", "-c", "104857600", "/dev/zero"))); i++) usleep(10000);
  CHECK(head > 0);
  int asleep = 0;
  for (long t0 = now_ms(); asleep < 5 && now_ms() - t0 < 30000; usleep(50000)) asleep = in_pipe_write(head) ? asleep + 1 : 0;
  CHECK(asleep == 5);
  send_frame(fd, F_KILL, 1, "\x09", 1);
  collect(fd, 1, 1, &r);
  CHECK(strcmp(r.exit, "137 9") == 0 && r.out.len < 104857600);
  CHECK(r.out.len >= OUT_HIGH_WATER); /* the buffer filled up to its limit before pipes were paused */
}

void test_session_limit(void) {
  int fd = conn();
  for (int i = 1; i <= TEST_MAX_SESSIONS; i++) start(fd, (uint32_t)i, 0, ARGV("sleep", "100"));
  start(fd, 99, 0, ARGV("true"));
  expect_fail(fd, 99, "too many sessions");
  /* Closing the connection kills all of them, so the next test (a new connection) has room. */
}

void test_disconnect_kills(void) {
  int fd = conn();
  start(fd, 1, 0, SH("echo $$; exec sleep 100"));
  struct frame *fr = recv_frame(fd);
  CHECK(fr->type == F_STDOUT);
  pid_t pid = atoi(fr->data);
  CHECK(pid > 1 && kill(pid, 0) == 0);
  close(fd);
  long t0 = now_ms();
  while (kill(pid, 0) == 0 && now_ms() - t0 < 3000) usleep(10000);
  CHECK(kill(pid, 0) != 0 && errno == ESRCH); /* killed and reaped by the agent */
  fd = conn();
  CHECK(strcmp(run(fd, 1, ARGV("true")).exit, "0 0") == 0);
}

/* D: the host is about to save the VM. Sessions survive the disconnect; after a hello they carry on. */
void test_detach_keeps_sessions(void) {
  int fd = conn();
  start(fd, 1, 0, SH("echo $$; i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo tick; sleep 0.02; done; echo done"));
  struct frame *fr = recv_frame(fd);
  CHECK(fr->type == F_STDOUT && fr->ch == 1);
  pid_t pid = atoi(fr->data);
  send_frame(fd, F_DETACH, 0, NULL, 0);
  for (;;) { /* output already queued may come first; `d` is the last frame */
    fr = recv_frame(fd);
    if (fr->ch == 0) break;
    CHECK(fr->ch == 1 && fr->type == F_STDOUT);
  }
  CHECK(fr->type == F_DETACH_REPLY && strcmp(fr->data, "ok") == 0);
  struct pollfd pf = {fd, POLLIN, 0};
  CHECK(poll(&pf, 1, 300) == 0); /* nothing after `d`, though the loop goes on writing */
  close(fd);
  usleep(200000);
  CHECK(kill(pid, 0) == 0); /* not killed by the disconnect */
  fd = conn();
  send_frame(fd, F_HELLO, 0, NULL, 0);
  fr = recv_frame(fd);
  CHECK(fr->ch == 0 && fr->type == F_HELLO_REPLY && strcmp(fr->data, "prism-agent 8 booted 1") == 0); /* channel 1 still runs */
  struct result r;
  collect(fd, 1, 1, &r); /* the same channel carries on to its end */
  CHECK(strcmp(r.exit, "0 0") == 0);
  CHECK(r.out.len >= 5 && memcmp(r.out.data + r.out.len - 5, "done\n", 5) == 0);
  send_frame(fd, F_FACTS, 0, "1700000000000\0" "00ff", 19); /* every field NUL-terminated */
  fr = recv_frame(fd);
  CHECK(fr->ch == 0 && fr->type == F_FACTS_REPLY && strcmp(fr->data, "ok") == 0);
  send_frame(fd, F_FACTS, 0, "soon", 4);
  fr = recv_frame(fd);
  CHECK(fr->type == F_FACTS_REPLY && strncmp(fr->data, "error: ", 7) == 0);
}

void test_quit(void) {
  int fd = conn();
  send_frame(fd, F_QUIT, 0, NULL, 0);
  char c;
  struct pollfd pf = {fd, POLLIN, 0};
  CHECK(poll(&pf, 1, 5000) == 1 && read(fd, &c, 1) == 0); /* the agent is gone */
}
