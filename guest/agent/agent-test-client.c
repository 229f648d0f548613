/* agent-test's client: frames to and from the agent under test, as prismd sends and reads them. */
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

long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int conn(void) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&agent_addr, sizeof agent_addr) == 0);
  return fd;
}

void write_all(int fd, const void *p, size_t n) {
  for (const char *c = p; n;) {
    ssize_t w = write(fd, c, n);
    CHECK(w > 0);
    c += w;
    n -= (size_t)w;
  }
}

void send_frame(int fd, char type, uint32_t ch, const void *p, size_t n) {
  unsigned char h[FRAME_HDR];
  frame_hdr_encode(h, type, ch, (uint32_t)n);
  write_all(fd, h, sizeof h);
  if (n) write_all(fd, p, n);
}

/* S with NUL-joined fields (P when `size` is "cols\0rows\0"); argv and env are NULL-terminated. */
void send_start_on(int fd, uint32_t ch, const char *size, size_t size_len, const char *cwd, int in, const char **argv, const char **env, const char *user) {
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

void send_start(int fd, uint32_t ch, const char *cwd, int in, const char **argv, const char **env, const char *user) {
  send_start_on(fd, ch, NULL, 0, cwd, in, argv, env, user);
}

const char *path_env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", NULL};

void start(int fd, uint32_t ch, int in, const char **argv) { send_start(fd, ch, "", in, argv, path_env, ""); }

void read_full(int fd, void *p, size_t n) {
  for (char *c = p; n;) {
    struct pollfd pf = {fd, POLLIN, 0};
    CHECK(poll(&pf, 1, 20000) == 1); /* the agent answers within 20 s or the test fails */
    ssize_t r = read(fd, c, n);
    CHECK(r > 0);
    c += r;
    n -= (size_t)r;
  }
}

static struct frame f;

struct frame *recv_frame(int fd) {
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


/* W: channel `ch` may send output up to `limit` bytes in all. */
void send_window(int fd, uint32_t ch, uint64_t limit) {
  unsigned char p[8];
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(limit >> (56 - 8 * i));
  send_frame(fd, F_WINDOW, ch, p, sizeof p);
}

/*
 * Reads frames until channels first..first+n-1 all sent X; nothing else may arrive. Like prismd's
 * reader, each output frame read opens the window by as much.
 */
void collect(int fd, uint32_t first, int n, struct result *res) {
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

int out_is(struct buf *b, const char *want) { return b->len == strlen(want) && memcmp(b->data, want, b->len) == 0; }

struct result run(int fd, uint32_t ch, const char **argv) {
  struct result r;
  start(fd, ch, 0, argv);
  collect(fd, ch, 1, &r);
  return r;
}
