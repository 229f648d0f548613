#define _GNU_SOURCE
#include "prism-init.h"
#include <sys/epoll.h>

/*
 * `prism-init spawnd`, on the host: starts commands for the daemon. A fork from Node copies the
 * daemon's page tables on its main thread (6 ms at 50 MiB of RSS, 25 ms at 250: measured), and every
 * runc, mount and cp call paid it; from this small process a fork costs well under a millisecond and
 * the daemon only writes a request. Frames both ways: length u32 big-endian, then the payload.
 *   request   id u32, timeout_ms u32 (0: none), stdout u8 (0 pipe, 1 /dev/null), then NUL-terminated
 *             fields: a file for stderr ("" = pipe), argv...
 *   response  id u32, exit code i32 (-1 when killed by a signal), signal i32, timed out u8,
 *             stdout length u32 + bytes, stderr length u32 + bytes (each at most MAX_OUT, the rest dropped)
 * A response is sent when the command exits, with what its pipes hold then: a process it left behind
 * (runc's container init) may keep them open forever. EOF on stdin ends the server; its running
 * commands go on (as they would under the daemon).
 */

#define MAX_OUT (16u << 20)
#define MAX_REQ (1u << 20)

struct buf {
  char *data;
  size_t len;
};

struct job {
  uint32_t id;
  pid_t pid;
  int out, err; /* pipes, -1 when none */
  struct buf o, e;
  long deadline_ms; /* 0: none */
  int timed_out;
};

static struct job *jobs;
static size_t njobs, capjobs;
static int ep;

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void put_u32(char *p, uint32_t v) {
  p[0] = (char)(v >> 24), p[1] = (char)(v >> 16), p[2] = (char)(v >> 8), p[3] = (char)v;
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void append(struct buf *b, const char *data, size_t n) {
  if (b->len >= MAX_OUT) return;
  if (n > MAX_OUT - b->len) n = MAX_OUT - b->len;
  char *grown = realloc(b->data, b->len + n);
  if (!grown) return;
  memcpy(grown + b->len, data, n);
  b->data = grown;
  b->len += n;
}

/* Reads what a pipe holds now (non-blocking); closes it at EOF or error. */
static void drain(int *fd, struct buf *b) {
  char tmp[65536];
  while (*fd >= 0) {
    ssize_t r = read(*fd, tmp, sizeof tmp);
    if (r > 0) {
      append(b, tmp, (size_t)r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, *fd, NULL);
    close(*fd);
    *fd = -1;
  }
}

static void respond(struct job *j, int status) {
  drain(&j->out, &j->o);
  drain(&j->err, &j->e);
  for (int *fd = &j->out; fd <= &j->err; fd++) {
    if (*fd >= 0) {
      epoll_ctl(ep, EPOLL_CTL_DEL, *fd, NULL);
      close(*fd);
      *fd = -1;
    }
  }
  size_t len = 4 + 4 + 4 + 1 + 4 + j->o.len + 4 + j->e.len;
  char *msg = malloc(4 + len);
  if (msg) {
    char *p = msg;
    put_u32(p, (uint32_t)len), p += 4;
    put_u32(p, j->id), p += 4;
    put_u32(p, (uint32_t)(WIFEXITED(status) ? WEXITSTATUS(status) : -1)), p += 4;
    put_u32(p, (uint32_t)(WIFSIGNALED(status) ? WTERMSIG(status) : 0)), p += 4;
    *p++ = (char)j->timed_out;
    put_u32(p, (uint32_t)j->o.len), p += 4;
    if (j->o.len) memcpy(p, j->o.data, j->o.len), p += j->o.len;
    put_u32(p, (uint32_t)j->e.len), p += 4;
    if (j->e.len) memcpy(p, j->e.data, j->e.len);
    write_all(1, msg, 4 + len);
    free(msg);
  }
  free(j->o.data);
  free(j->e.data);
  *j = jobs[--njobs];
}

/* Starts one request; a failure to start is reported as exit 127 with a message. */
static void start(const unsigned char *req, uint32_t len) {
  if (len < 9) return;
  uint32_t id = get_u32(req), timeout = get_u32(req + 4);
  int null_out = req[8] == 1;
  char *cur = (char *)req + 9, *end = (char *)req + len;
  char *errfile = next_field(&cur, end);
  char *argv[MAX_ARGS + 1];
  int argc = 0;
  for (char *f; argc < MAX_ARGS && (f = next_field(&cur, end));) argv[argc++] = f;
  argv[argc] = NULL;
  struct job j = {.id = id, .pid = -1, .out = -1, .err = -1};
  if (!errfile || argc == 0) {
    append(&j.e, "prism-init spawnd: bad request\n", 31);
    respond((jobs[njobs] = j, &jobs[njobs++]), 127 << 8);
    return;
  }
  int o[2] = {-1, -1}, e[2] = {-1, -1};
  if ((!null_out && pipe2(o, O_CLOEXEC | O_NONBLOCK) != 0) || (!errfile[0] && pipe2(e, O_CLOEXEC | O_NONBLOCK) != 0)) {
    append(&j.e, "prism-init spawnd: no pipes left\n", 33);
    respond((jobs[njobs] = j, &jobs[njobs++]), 127 << 8);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = null_out ? open("/dev/null", O_WRONLY | O_CLOEXEC) : o[1];
    int err = errfile[0] ? open(errfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : e[1];
    if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(127);
    execvp(argv[0], argv);
    dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  if (o[1] >= 0) close(o[1]);
  if (e[1] >= 0) close(e[1]);
  if (pid < 0) {
    if (o[0] >= 0) close(o[0]);
    if (e[0] >= 0) close(e[0]);
    append(&j.e, "prism-init spawnd: cannot fork\n", 31);
    respond((jobs[njobs] = j, &jobs[njobs++]), 127 << 8);
    return;
  }
  j.pid = pid;
  j.out = o[0];
  j.err = e[0];
  j.deadline_ms = timeout ? now_ms() + timeout : 0;
  for (int k = 0; k < 2; k++) {
    int fd = k ? j.err : j.out;
    if (fd < 0) continue;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)id << 1) | (uint64_t)k};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  jobs[njobs++] = j;
}

static struct job *by_id(uint32_t id) {
  for (size_t i = 0; i < njobs; i++)
    if (jobs[i].id == id) return &jobs[i];
  return NULL;
}

#define EV_STDIN UINT64_MAX
#define EV_CHLD (UINT64_MAX - 1)

int spawn_server(void) {
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (sfd < 0 || ep < 0) return 1;
  struct epoll_event in = {.events = EPOLLIN, .data.u64 = EV_STDIN}, sc = {.events = EPOLLIN, .data.u64 = EV_CHLD};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &sc) != 0) return 1;
  unsigned char *req = malloc(MAX_REQ + 4);
  size_t have = 0;
  int open_in = 1;
  while (open_in || njobs > 0) {
    long wait = -1, now = now_ms();
    for (size_t i = 0; i < njobs; i++) {
      if (!jobs[i].deadline_ms || jobs[i].timed_out) continue;
      long left = jobs[i].deadline_ms - now;
      if (left <= 0) {
        jobs[i].timed_out = 1;
        kill(jobs[i].pid, SIGKILL);
      } else if (wait < 0 || left < wait) {
        wait = left;
      }
    }
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, (int)wait);
    if (n < 0 && errno != EINTR) return 1;
    for (int k = 0; k < n; k++) {
      uint64_t tag = evs[k].data.u64;
      if (tag == EV_STDIN) {
        ssize_t r = read(0, req + have, MAX_REQ + 4 - have);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
          open_in = 0;
          epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
          continue;
        }
        if (r < 0) continue;
        have += (size_t)r;
        while (have >= 4 && have >= 4 + get_u32(req)) {
          uint32_t len = get_u32(req);
          if (njobs == capjobs) {
            size_t c = capjobs ? capjobs * 2 : 64;
            struct job *g = realloc(jobs, c * sizeof *g);
            if (!g) return 1;
            jobs = g;
            capjobs = c;
          }
          start(req + 4, len);
          memmove(req, req + 4 + len, have - 4 - len);
          have -= 4 + len;
        }
        if (have >= 4 && get_u32(req) > MAX_REQ) return 1; /* a request no daemon sends */
      } else if (tag == EV_CHLD) {
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) > 0) {
        }
      } else {
        struct job *j = by_id((uint32_t)(tag >> 1));
        if (j) {
          if (tag & 1) drain(&j->err, &j->e);
          else drain(&j->out, &j->o);
        }
      }
    }
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      for (size_t i = 0; i < njobs; i++) {
        if (jobs[i].pid == pid) {
          respond(&jobs[i], status);
          break;
        }
      }
    }
  }
  return 0;
}
