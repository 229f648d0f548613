#define _GNU_SOURCE
#include "prism-init.h"
#include <sys/epoll.h>
#include <sys/syscall.h>

/*
 * `prism-init pidwatch`, on the host: tells the daemon when processes end, without it polling each one.
 * Node has no pidfd, so one such helper serves every task of a daemon: a pidfd per watched process
 * (Linux 5.3+) in one epoll set.
 *   stdin  "+ KEY PID"  watch PID under KEY (a task id; no spaces)   "- KEY"  stop watching KEY
 *   stdout "gone KEY"   the process ended (or was already gone when added)
 *          "nowatch KEY ERRNO"  it cannot be watched (no pidfd on this kernel, out of fds): poll it
 * EOF on stdin (the daemon went) ends the helper. A pidfd names one process, never a later one that
 * reuses its pid; the daemon checks the pid it read is still its task's after adding it.
 */

#define MAX_KEY 128

struct watch {
  char key[MAX_KEY];
  int fd; /* -1: a free slot */
};

static struct watch *table;
static size_t used, cap;

static void say(const char *what, const char *key, int err) {
  if (err) printf("%s %s %d\n", what, key, err);
  else printf("%s %s\n", what, key);
  fflush(stdout);
}

static void drop(int ep, size_t i) {
  epoll_ctl(ep, EPOLL_CTL_DEL, table[i].fd, NULL);
  close(table[i].fd);
  table[i].fd = -1;
}

static void add(int ep, const char *key, long pid) {
  int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) {
    if (errno == ESRCH) say("gone", key, 0);
    else say("nowatch", key, errno);
    return;
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  size_t i = 0;
  while (i < used && table[i].fd >= 0) i++;
  if (i == used) {
    if (used == cap) {
      size_t n = cap ? cap * 2 : 64;
      struct watch *grown = realloc(table, n * sizeof *table);
      if (!grown) {
        close(fd);
        say("nowatch", key, ENOMEM);
        return;
      }
      table = grown;
      cap = n;
    }
    used++;
  }
  snprintf(table[i].key, MAX_KEY, "%s", key);
  table[i].fd = fd;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
    int err = errno;
    close(fd);
    table[i].fd = -1;
    say("nowatch", key, err);
  }
}

static void command(int ep, char *line) {
  char key[MAX_KEY];
  long pid;
  if (sscanf(line, "+ %127s %ld", key, &pid) == 2 && pid > 0) {
    add(ep, key, pid);
  } else if (sscanf(line, "- %127s", key) == 1) {
    for (size_t i = 0; i < used; i++)
      if (table[i].fd >= 0 && strcmp(table[i].key, key) == 0) drop(ep, i);
  } else {
    fprintf(stderr, "prism-init pidwatch: bad command: %s\n", line);
  }
}

int pid_watch(void) {
  signal(SIGPIPE, SIG_IGN);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return 1;
  struct epoll_event in = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in) != 0) return 1;
  char buf[8192];
  size_t have = 0;
  for (;;) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    for (int k = 0; k < n; k++) {
      uint64_t i = evs[k].data.u64;
      if (i != UINT64_MAX) {
        if (i < used && table[i].fd >= 0) {
          say("gone", table[i].key, 0);
          drop(ep, (size_t)i);
        }
        continue;
      }
      ssize_t r = read(0, buf + have, sizeof buf - have);
      if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) return 0;
      if (r < 0) continue;
      have += (size_t)r;
      char *start = buf, *nl;
      while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
        *nl = 0;
        command(ep, start);
        start = nl + 1;
      }
      have -= (size_t)(start - buf);
      memmove(buf, start, have);
      if (have == sizeof buf) have = 0; /* a line longer than any command: drop it */
    }
  }
}
