/*
 * agent-test: unit tests of the codecs, then the agent core (agent.c, session.c) served on a unix
 * socket in a child process, driven frame by frame the way prismd drives the virtio port. boot.c's
 * seams are replaced below: port_reconnect accepts the next test's connection, so every test also
 * exercises disconnect and reconnect. Each test runs in its own process; `make test` fails if any does.
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

#define CHECK(c)                                                                 \
  do {                                                                           \
    if (!(c)) {                                                                  \
      fprintf(stderr, "    %s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      exit(1);                                                                   \
    }                                                                            \
  } while (0)
#define TEST_MAX_SESSIONS 32

static struct sockaddr_un addr = {.sun_family = AF_UNIX};
static int listen_fd = -1;

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

/* The fake cgroup's oom_kill counter: a number in a file the tests' commands write. */
static char oom_file[64];

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

/* ---- client ---- */

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int conn(void) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
  return fd;
}

static void write_all(int fd, const void *p, size_t n) {
  for (const char *c = p; n;) {
    ssize_t w = write(fd, c, n);
    CHECK(w > 0);
    c += w;
    n -= (size_t)w;
  }
}

static void send_frame(int fd, char type, uint32_t ch, const void *p, size_t n) {
  unsigned char h[FRAME_HDR];
  frame_hdr_encode(h, type, ch, (uint32_t)n);
  write_all(fd, h, sizeof h);
  if (n) write_all(fd, p, n);
}

/* S with NUL-joined fields (P when `size` is "cols\0rows\0"); argv and env are NULL-terminated. */
static void send_start_on(int fd, uint32_t ch, const char *size, size_t size_len, const char *cwd, int in, const char **argv, const char **env, const char *user) {
  struct buf b = {0};
  char num[16];
  if (size) buf_append(&b, size, size_len);
  int argc = 0, envc = 0;
  while (argv[argc]) argc++;
  while (env && env[envc]) envc++;
  buf_append(&b, cwd, strlen(cwd) + 1);
  buf_append(&b, in ? "stdin" : "", in ? 6 : 1);
  buf_append(&b, num, (size_t)snprintf(num, sizeof num, "%d", argc) + 1);
  for (int i = 0; i < argc; i++) buf_append(&b, argv[i], strlen(argv[i]) + 1);
  buf_append(&b, num, (size_t)snprintf(num, sizeof num, "%d", envc) + 1);
  for (int i = 0; i < envc; i++) buf_append(&b, env[i], strlen(env[i]) + 1);
  buf_append(&b, user, strlen(user) + 1);
  send_frame(fd, size ? F_PTY_START : F_START, ch, b.data, b.len);
  buf_free(&b);
}

static void send_start(int fd, uint32_t ch, const char *cwd, int in, const char **argv, const char **env, const char *user) {
  send_start_on(fd, ch, NULL, 0, cwd, in, argv, env, user);
}

static const char *path_env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", NULL};

static void start(int fd, uint32_t ch, int in, const char **argv) { send_start(fd, ch, "", in, argv, path_env, ""); }

static void read_full(int fd, void *p, size_t n) {
  for (char *c = p; n;) {
    struct pollfd pf = {fd, POLLIN, 0};
    CHECK(poll(&pf, 1, 20000) == 1); /* the agent answers within 20 s or the test fails */
    ssize_t r = read(fd, c, n);
    CHECK(r > 0);
    c += r;
    n -= (size_t)r;
  }
}

struct frame {
  char type;
  uint32_t ch, len;
  char data[FRAME_MAX + 1]; /* NUL-terminated for convenience */
};
static struct frame f;

static struct frame *recv_frame(int fd) {
  unsigned char h[FRAME_HDR];
  read_full(fd, h, sizeof h);
  struct frame_hdr hd = frame_hdr_decode(h);
  CHECK(hd.length <= FRAME_MAX);
  f.type = (char)hd.type;
  f.ch = hd.channel;
  f.len = hd.length;
  read_full(fd, f.data, f.len);
  f.data[f.len] = 0;
  return &f;
}

struct result {
  struct buf out, err;
  char exit[32];
};

/* W: channel `ch` may send output up to `limit` bytes in all. */
static void send_window(int fd, uint32_t ch, uint64_t limit) {
  unsigned char p[8];
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(limit >> (56 - 8 * i));
  send_frame(fd, F_WINDOW, ch, p, sizeof p);
}

/*
 * Reads frames until channels first..first+n-1 all sent X; nothing else may arrive. Like prismd's
 * reader, each output frame read opens the window by as much.
 */
static void collect(int fd, uint32_t first, int n, struct result *res) {
  memset(res, 0, sizeof *res * (size_t)n);
  for (int done = 0; done < n;) {
    struct frame *fr = recv_frame(fd);
    if (fr->ch < first || fr->ch >= first + (uint32_t)n) fprintf(stderr, "    unexpected %c on channel %u: %s\n", fr->type, fr->ch, fr->data);
    CHECK(fr->ch >= first && fr->ch < first + (uint32_t)n);
    struct result *r = &res[fr->ch - first];
    CHECK(!r->exit[0]);
    if (fr->type == F_STDOUT) buf_append(&r->out, fr->data, fr->len);
    else if (fr->type == F_STDERR) buf_append(&r->err, fr->data, fr->len);
    else CHECK(fr->type == F_EXIT && fr->len < sizeof r->exit && (done++, 1));
    if (fr->type == F_EXIT) memcpy(r->exit, fr->data, fr->len + 1);
    else if (fr->ch <= CHANNEL_MAX) send_window(fd, fr->ch, r->out.len + r->err.len + OUT_WINDOW); /* above: answered again */
  }
}

static int out_is(struct buf *b, const char *want) { return b->len == strlen(want) && memcmp(b->data, want, b->len) == 0; }

static struct result run(int fd, uint32_t ch, const char **argv) {
  struct result r;
  start(fd, ch, 0, argv);
  collect(fd, ch, 1, &r);
  return r;
}

#define ARGV(...) ((const char *[]){__VA_ARGS__, NULL})
#define SH(script) ARGV("sh", "-c", script)

/* ---- unit tests ---- */

static void test_frame_codec(void) {
  unsigned char h[FRAME_HDR];
  frame_hdr_encode(h, 'S', 0x80000000u, 0x00100000u);
  CHECK(memcmp(h, "S\x80\0\0\0\0\x10\0\0", 9) == 0);
  struct frame_hdr d = frame_hdr_decode(h);
  CHECK(d.type == 'S' && d.channel == 0x80000000u && d.length == FRAME_MAX);
}

static const char *parse(const char *p, size_t n) {
  static char copy[256];
  struct start_req r;
  memcpy(copy, p, n);
  const char *why = start_parse(copy, (uint32_t)n, &r);
  start_free(&r);
  return why;
}
#define LIT(s) s, sizeof s - 1
#define PARSE(lit) parse(LIT(lit))

static void test_start_parse(void) {
  char p[] = "/tmp\0stdin\0002\0ls\0-l\0001\0A=1\0\0";
  struct start_req r;
  CHECK(start_parse(p, sizeof p - 1, &r) == NULL);
  CHECK(strcmp(r.cwd, "/tmp") == 0 && r.want_stdin && strcmp(r.argv[1], "-l") == 0 && !r.argv[2]);
  CHECK(strcmp(r.envp[0], "A=1") == 0 && !r.envp[1] && strcmp(r.user, "") == 0);
  start_free(&r);
  CHECK(PARSE("\0\0001\0true\0000\0\0") == NULL);
  CHECK(PARSE("\0\0001\0true\0000\0") != NULL);           /* no user field */
  CHECK(PARSE("\0\0001\0true\0000\0\0x") != NULL);        /* trailing bytes */
  CHECK(PARSE("\0\0005\0true\0000\0\0") != NULL);         /* argc larger than the fields */
  CHECK(PARSE("\0\0001\0true\0009\0\0") != NULL);         /* envc larger than the fields */
  CHECK(PARSE("\0\0000\0000\0\0") != NULL);                /* argc 0 */
  CHECK(PARSE("\0\0-1\0true\0000\0\0") != NULL);           /* argc not plain digits */
  CHECK(PARSE("\0yes\0001\0true\0000\0\0") != NULL);      /* stdin field */
  CHECK(PARSE("\0\0001\0tru") != NULL);                    /* truncated */
  CHECK(PARSE("") != NULL);
  CHECK(PARSE("\0\0004294967297\0true\0000\0\0") != NULL); /* huge argc */
}

static void test_size_parse(void) {
  char p[] = "80\00024\0/\0\0001\0sh\0000\0\0";
  struct start_req r;
  unsigned c, w;
  CHECK(pty_start_parse(p, sizeof p - 1, &r) == NULL && r.cols == 80 && r.rows == 24 && r.want_stdin && strcmp(r.argv[0], "sh") == 0);
  start_free(&r);
  char bad[] = "0\00024\0/\0\0001\0sh\0000\0\0";
  CHECK(pty_start_parse(bad, sizeof bad - 1, &r) != NULL);
  start_free(&r);
  CHECK(size_parse(LIT("100\00030\0"), &c, &w) == 0 && c == 100 && w == 30);
  CHECK(size_parse(LIT("100\0"), &c, &w) < 0 && size_parse(LIT("65536\0001\0"), &c, &w) < 0 && size_parse(LIT("1\0001\0x"), &c, &w) < 0);
}

static void test_user_parse(void) {
  struct user_spec u;
  CHECK(user_parse("1000 1000", &u) == 0 && u.uid == 1000 && u.gid == 1000 && u.ngroups == 0);
  CHECK(user_parse("1 2 ", &u) == 0 && u.ngroups == 0);
  CHECK(user_parse("1 2 3,4", &u) == 0 && u.ngroups == 2 && u.groups[1] == 4);
  CHECK(user_parse("1", &u) < 0 && user_parse("a 1", &u) < 0 && user_parse("1 2 3,", &u) < 0);
  CHECK(user_parse("1 2 3x", &u) < 0 && user_parse("4294967295 0", &u) < 0 && user_parse("-1 0", &u) < 0);
}

/* ---- the agent over a socket ---- */

static void test_hello_booted(void) {
  int fd = conn();
  send_frame(fd, 'Z', 0, "junk", 4); /* unknown control frame: ignored */
  send_frame(fd, F_HELLO, 0, NULL, 0);
  struct frame *fr = recv_frame(fd);
  CHECK(fr->type == F_HELLO_REPLY && fr->ch == 0 && strcmp(fr->data, "prism-agent 8 booted") == 0);
}

static void test_echo(void) {
  int fd = conn();
  struct result r = run(fd, 1, ARGV("echo", "hi"));
  CHECK(out_is(&r.out, "hi\n") && r.err.len == 0 && strcmp(r.exit, "0 0") == 0);
}

static void test_exit_codes(void) {
  int fd = conn();
  CHECK(strcmp(run(fd, 1, SH("exit 3")).exit, "3 0") == 0);
  CHECK(strcmp(run(fd, 2, SH("kill -TERM $$")).exit, "143 15") == 0);
  CHECK(strcmp(run(fd, 3, ARGV("false")).exit, "1 0") == 0);
}

static void test_stderr_separate(void) {
  int fd = conn();
  struct result r = run(fd, 7, SH("echo out; echo err >&2; echo out2"));
  CHECK(out_is(&r.out, "out\nout2\n") && out_is(&r.err, "err\n") && strcmp(r.exit, "0 0") == 0);
}

static void test_stdin_cat(void) {
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

static void test_cwd_env_user(void) {
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

static void test_big_output(void) {
  int fd = conn();
  struct result r = run(fd, 9, ARGV("head", "-c", "10485760", "/dev/zero"));
  CHECK(r.out.len == 10485760 && strcmp(r.exit, "0 0") == 0);
  for (size_t i = 0; i < r.out.len; i++) CHECK(r.out.data[i] == 0);
}

/* 20 cats fed round-robin in small pieces: every byte reaches its own session, in order. */
static void test_concurrent(void) {
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

static void test_kill(void) {
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

/* Whether a process whose command line is `a` then `b` (two arguments) runs on this host. */
static int running(const char *a, const char *b) {
  size_t la = strlen(a) + 1, lb = strlen(b) + 1;
  char path[300], buf[256];
  DIR *d = opendir("/proc");
  struct dirent *e;
  int found = 0;
  while (d && !found && (e = readdir(d))) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    FILE *f = fopen(path, "re");
    if (!f) continue;
    size_t got = fread(buf, 1, sizeof buf, f);
    fclose(f);
    found = got == la + lb && memcmp(buf, a, la) == 0 && memcmp(buf + la, b, lb) == 0;
  }
  if (d) closedir(d);
  return found;
}

/* P: a terminal on fds 0-2 of the asked size, R resizes it, C is ignored, stderr stays empty. */
static void test_pty(void) {
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
static void test_oom_in_exit(void) {
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

static void test_malformed(void) {
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

static void test_not_found(void) {
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
static void test_background(void) {
  int fd = conn();
  long t0 = now_ms();
  struct result r = run(fd, 1, SH("(sleep 1; echo late) & echo now"));
  CHECK(out_is(&r.out, "now\n") && strcmp(r.exit, "0 0") == 0 && now_ms() - t0 < 900);
}

static void test_slow_consumers(void) {
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
static void test_window(void) {
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
static void test_host_not_reading(void) {
  int fd = conn();
  struct result r;
  start(fd, 1, 0, ARGV("head", "-c", "104857600", "/dev/zero"));
  send_window(fd, 1, UINT64_MAX);
  usleep(500000);
  send_frame(fd, F_KILL, 1, "\x09", 1);
  collect(fd, 1, 1, &r);
  CHECK(strcmp(r.exit, "137 9") == 0 && r.out.len < 104857600);
  CHECK(r.out.len >= OUT_HIGH_WATER); /* the buffer filled up to its limit before pipes were paused */
}

static void test_session_limit(void) {
  int fd = conn();
  for (int i = 1; i <= TEST_MAX_SESSIONS; i++) start(fd, (uint32_t)i, 0, ARGV("sleep", "100"));
  start(fd, 99, 0, ARGV("true"));
  expect_fail(fd, 99, "too many sessions");
  /* Closing the connection kills all of them, so the next test (a new connection) has room. */
}

static void test_disconnect_kills(void) {
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
static void test_detach_keeps_sessions(void) {
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

static const char *control(int fd, char type, const void *p, size_t n) {
  send_frame(fd, type, 0, p, n);
  struct frame *fr = recv_frame(fd);
  CHECK(fr->ch == 0 && fr->type == (type == F_MOUNT ? F_MOUNT_REPLY : type == F_STATS ? F_STATS_REPLY : type == F_NETWORK ? F_NETWORK_REPLY : type == F_VOLUME ? F_VOLUME_REPLY : F_HELLO_REPLY));
  return fr->data;
}

/* Runs while the agent is still `booted`: a volume needs the sandbox's root to mount into. */
static void test_volume_before_mount(void) {
  int fd = conn();
  static const char v[] = "prism-vol0\0/data\0rw";
  CHECK(strcmp(control(fd, F_VOLUME, v, sizeof v), "error: rootfs not mounted yet (M comes first)") == 0);
}

static void test_volume(void) {
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

static void test_mount(void) {
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

static void test_net_config_parse(void) {
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
static void test_no_new_privs(void) {
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
static void test_seccomp_filter(void) {
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
static void test_command_confinement(void) {
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

static void test_quit(void) {
  int fd = conn();
  send_frame(fd, F_QUIT, 0, NULL, 0);
  char c;
  struct pollfd pf = {fd, POLLIN, 0};
  CHECK(poll(&pf, 1, 5000) == 1 && read(fd, &c, 1) == 0); /* the agent is gone */
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
  snprintf(addr.sun_path, sizeof addr.sun_path, "/tmp/prism-agent-test.%d.sock", getpid());
  snprintf(oom_file, sizeof oom_file, "/tmp/prism-agent-test.%d.oom", getpid());
  unlink(addr.sun_path);
  listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listen_fd, 8) < 0) {
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
  unlink(addr.sun_path);
  unlink(oom_file);
  printf("%s: %zu tests, %d failed\n", failed ? "FAIL" : "PASS", sizeof tests / sizeof tests[0], failed);
  return failed != 0;
}
