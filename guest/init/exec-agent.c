#define _GNU_SOURCE
#include "prism-init.h"
#include "proc-tree.h"

/* The exec agent: one command per connection (protocol in prism-init.c). */

/* Writes all of `buf`, waiting out EINTR and a full non-blocking fd; -1 on any other error (prism-init.h). */
int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        poll(&pfd, 1, -1);
        continue;
      }
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int send_frame(int fd, char type, const void *data, uint32_t len) {
  unsigned char hdr[5] = {(unsigned char)type, len >> 24, len >> 16, len >> 8, len};
  if (write_all(fd, hdr, 5) < 0) return -1;
  return len ? write_all(fd, data, len) : 0;
}

/* Reads exactly n bytes; 0 on success, -1 on EOF or error. */
static int read_full(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static char *read_frame(int fd, char *type, uint32_t *len) {
  unsigned char hdr[5];
  if (read_full(fd, hdr, 5) < 0) return NULL;
  *type = (char)hdr[0];
  *len = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4];
  if (*len > MAX_FRAME) return NULL;
  char *buf = malloc(*len + 1);
  if (!buf) return NULL;
  if (read_full(fd, buf, *len) < 0) {
    free(buf);
    return NULL;
  }
  buf[*len] = 0;
  return buf;
}

/*
 * Sends the exit frame and ends the connection without losing anything. The daemon may still be
 * writing (stdin or its end, a signal) when the command has already exited; closing now would reset
 * the connection (unread data in our queue) or fail the daemon's write (EPIPE), and the daemon would
 * drop the output and exit frame still queued on its side. So: half-close, and read what comes until
 * the daemon closes its side after the exit frame (or 2 s pass).
 */
static void finish(int c, const char *exit_msg) {
  send_frame(c, 'X', exit_msg, (uint32_t)strlen(exit_msg));
  shutdown(c, SHUT_WR);
  char buf[4096];
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = 2000 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
    struct pollfd p = {c, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) break;
    ssize_t r = read(c, buf, sizeof buf);
    if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) break;
  }
  _exit(0);
}

/* Splits a start frame's NUL-terminated fields. */
char *next_field(char **cur, char *end) {
  if (*cur >= end) return NULL;
  char *f = *cur;
  char *nul = memchr(f, 0, (size_t)(end - f));
  if (!nul) return NULL;
  *cur = nul + 1;
  return f;
}


/*
 * Drops to the user the daemon resolved from the image ("uid gid g1,g2,..."): groups first, then gid,
 * then uid, which also clears every capability (no SECBIT_KEEP_CAPS).
 */
static void become_user(const char *spec) {
  unsigned uid, gid;
  int off = 0;
  if (sscanf(spec, "%u %u %n", &uid, &gid, &off) < 2) {
    dprintf(2, "prism: bad user spec %s\n", spec);
    _exit(126);
  }
  gid_t groups[64];
  int n = 0;
  for (const char *p = spec + off; *p && n < 64;) {
    char *endp;
    unsigned long g = strtoul(p, &endp, 10);
    if (endp == p) break;
    groups[n++] = (gid_t)g;
    p = *endp == ',' ? endp + 1 : endp;
  }
  if (setgroups((size_t)n, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
    dprintf(2, "prism: cannot become user %u:%u: %s\n", uid, gid, strerror(errno));
    _exit(126);
  }
}

/*
 * A tty command's side of the terminal: a new session whose controlling terminal is the pty slave,
 * on fds 0-2. Called after setsid(), still as root, so the slave can be handed to the user.
 */
static void attach_tty(const char *slave, const char *user) {
  int fd = open(slave, O_RDWR);
  if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) != 0) {
    dprintf(2, "prism: cannot attach the terminal %s: %s\n", slave, strerror(errno));
    _exit(126);
  }
  unsigned uid, gid;
  /* The user's own terminal, as login(1) leaves it: programs like mesg and script expect that. */
  if (user && user[0] && sscanf(user, "%u %u", &uid, &gid) == 2 && fchown(fd, uid, (gid_t)-1) != 0) {
    dprintf(2, "prism: cannot hand the terminal to %u: %s\n", uid, strerror(errno));
  }
  for (int i = 0; i < 3; i++) dup2(fd, i);
  if (fd > 2) close(fd);
}

static void child_exec(char *cwd, char **argv, char **envp, const char *user, const char *tty, int in_fd, int out_fd, int err_fd) {
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
  setsid(); /* own process group: the whole command can be signalled at once */
  if (tty) {
    attach_tty(tty, user);
  } else {
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
  }
  if (user && user[0]) become_user(user);
  if (cwd[0] && chdir(cwd) != 0) {
    dprintf(2, "prism: cannot change directory to %s: %s\n", cwd, strerror(errno));
    _exit(126);
  }
  /* execvp looks PATH up in environ, so the command's own PATH must be in place first. */
  environ = envp;
  execvp(argv[0], argv);
  int err = errno;
  dprintf(2, "prism: cannot run %s: %s\n", argv[0], strerror(err));
  _exit(err == ENOENT ? 127 : 126);
}

/* "cols rows" -> a window size; 0 when well formed. */
static int parse_size(const char *s, struct winsize *ws) {
  unsigned cols, rows;
  if (!s || sscanf(s, "%u %u", &cols, &rows) != 2 || cols < 1 || rows < 1 || cols > 65535 || rows > 65535) return -1;
  *ws = (struct winsize){.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  return 0;
}

/* A new pty master of size ws (non-blocking, close-on-exec), its slave's path in `slave`; -1 on failure. */
static int open_pty(const struct winsize *ws, char *slave, size_t n) {
  int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
  if (m < 0) return -1;
  if (grantpt(m) != 0 || unlockpt(m) != 0 || ptsname_r(m, slave, n) != 0 || ioctl(m, TIOCSWINSZ, ws) != 0) {
    close(m);
    return -1;
  }
  return m;
}

/*
 * What a tty command wrote before exiting: read until the slave side is closed everywhere (EIO; the
 * kernel hands over the data still in flight first), or until it stays quiet for 100 ms or 500 ms
 * have passed, which means a background process it left still holds the terminal (and may write to
 * it forever).
 */
static void drain_tty(int c, int master) {
  char buf[65536];
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    struct pollfd p = {master, POLLIN, 0};
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = 500 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
    if (left <= 0 || poll(&p, 1, left < 100 ? (int)left : 100) <= 0) return;
    ssize_t r = read(master, buf, sizeof buf);
    if (r > 0) send_frame(c, 'O', buf, (uint32_t)r);
    else if (r == 0 || (errno != EINTR && errno != EAGAIN)) return;
  }
}

struct outbuf {
  char *data;
  size_t len;
};

/* Serves one command on connection `c`; runs in its own process, never returns. */
void serve(int c) {
  char type;
  uint32_t len;
  char *req = read_frame(c, &type, &len);
  if (!req || type != 'S') _exit(1);
  char *cur = req, *end = req + len;
  char *cwd = next_field(&cur, end);
  char *want_stdin = next_field(&cur, end);
  char *argc_s = next_field(&cur, end);
  int argc = argc_s ? atoi(argc_s) : 0;
  if (!cwd || !want_stdin || argc <= 0 || argc > MAX_ARGS) _exit(1);
  char **argv = calloc((size_t)argc + 1, sizeof *argv);
  for (int i = 0; i < argc; i++)
    if (!(argv[i] = next_field(&cur, end))) _exit(1);
  char *envc_s = next_field(&cur, end);
  int envc = envc_s ? atoi(envc_s) : -1;
  if (envc < 0 || envc > MAX_ARGS) _exit(1);
  char **envp = calloc((size_t)envc + 1, sizeof *envp);
  for (int i = 0; i < envc; i++)
    if (!(envp[i] = next_field(&cur, end))) _exit(1);
  /* Optional trailing fields (newer daemons): the user to run as, "uid gid groups" ("" = root), then
   * the terminal size "cols rows" of a tty command. */
  char *user = next_field(&cur, end);
  char *tty_size = next_field(&cur, end);
  struct winsize ws;
  if (tty_size && parse_size(tty_size, &ws) != 0) _exit(1);

  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, master = -1;
  char slave[64];
  if (tty_size) {
    if ((master = open_pty(&ws, slave, sizeof slave)) < 0) {
      char msg[128];
      int m = snprintf(msg, sizeof msg, "prism: cannot open a terminal: %s\n", strerror(errno));
      send_frame(c, 'E', msg, (uint32_t)m);
      finish(c, "126 0");
    }
    /* The master is both ends for us: a dup, so closing "stdin" on EIO leaves the output side open. */
    out[0] = master;
    if ((in[1] = dup(master)) < 0) _exit(1);
    fcntl(in[1], F_SETFD, FD_CLOEXEC);
  } else {
    if (want_stdin[0]) {
      if (pipe2(in, O_CLOEXEC) < 0) _exit(1);
    } else if ((in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
      _exit(1);
    }
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) _exit(1);
  }

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  pid_t pid = fork();
  if (pid < 0) {
    const char *msg = "prism: cannot fork: process limit reached\n";
    send_frame(c, 'E', msg, (uint32_t)strlen(msg));
    finish(c, "126 0");
  }
  if (pid == 0) child_exec(cwd, argv, envp, user, master >= 0 ? slave : NULL, in[0], out[1], err[1]);
  if (master < 0) {
    close(in[0]);
    close(out[1]);
    close(err[1]);
  }
  int in_w = in[1];
  if (in_w >= 0) fcntl(in_w, F_SETFL, O_NONBLOCK);

  struct outbuf pending = {NULL, 0};
  int stdin_closing = 0, conn_open = 1, out_open = 1, err_open = master < 0, status = 0;
  int exited = 0;
  char buf[65536];
  while (!exited) {
    struct pollfd p[5];
    int n = 0, i_conn = -1, i_out = -1, i_err = -1, i_in = -1;
    p[n] = (struct pollfd){sfd, POLLIN, 0};
    n++;
    if (conn_open && pending.len < STDIN_HIGH_WATER) { i_conn = n; p[n++] = (struct pollfd){c, POLLIN, 0}; }
    if (out_open) { i_out = n; p[n++] = (struct pollfd){out[0], POLLIN, 0}; }
    if (err_open) { i_err = n; p[n++] = (struct pollfd){err[0], POLLIN, 0}; }
    if (in_w >= 0 && pending.len) { i_in = n; p[n++] = (struct pollfd){in_w, POLLOUT, 0}; }
    if (poll(p, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (i_out >= 0 && p[i_out].revents) {
      ssize_t r = read(out[0], buf, sizeof buf);
      if (r > 0) send_frame(c, 'O', buf, (uint32_t)r);
      else if (r == 0 || (errno != EINTR && errno != EAGAIN)) out_open = 0; /* a pty master: EIO */
    }
    if (i_err >= 0 && p[i_err].revents) {
      ssize_t r = read(err[0], buf, sizeof buf);
      if (r > 0) send_frame(c, 'E', buf, (uint32_t)r);
      else if (r == 0 || errno != EINTR) err_open = 0;
    }
    if (i_conn >= 0 && p[i_conn].revents) {
      char *data = read_frame(c, &type, &len);
      if (!data) {
        /* The daemon went away (or spoke garbage): nobody will read the output, end the command. */
        conn_open = 0;
        kill_tree(pid, SIGKILL);
      } else if (type == 'I' && in_w >= 0 && !stdin_closing) {
        char *grown = realloc(pending.data, pending.len + len);
        if (grown) {
          memcpy(grown + pending.len, data, len);
          pending.data = grown;
          pending.len += len;
        }
      } else if (type == 'C' && master < 0) {
        stdin_closing = 1; /* a terminal has no end of input but the EOF character, sent as data */
      } else if (type == 'K' && len == 1) {
        int sig = (unsigned char)data[0];
        /* On a terminal a signal is for its foreground job, as a keyboard's would be; SIGKILL ends all. */
        pid_t fg = master >= 0 && sig != SIGKILL ? tcgetpgrp(master) : -1;
        if (fg <= 0 || kill(-fg, sig) != 0) kill_tree(pid, sig);
      } else if (type == 'R' && master >= 0 && parse_size(data, &ws) == 0) {
        ioctl(master, TIOCSWINSZ, &ws); /* the kernel sends SIGWINCH to the foreground job */
      }
      free(data);
    }
    if (i_in >= 0 && p[i_in].revents) {
      ssize_t w = write(in_w, pending.data, pending.len);
      if (w > 0) {
        memmove(pending.data, pending.data + w, pending.len - (size_t)w);
        pending.len -= (size_t)w;
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        pending.len = 0; /* the command closed its stdin: drop the rest */
        close(in_w);
        in_w = -1;
      }
    }
    if (in_w >= 0 && stdin_closing && pending.len == 0) {
      close(in_w);
      in_w = -1;
    }
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) > 0) {
    }
    if (waitpid(pid, &status, WNOHANG) == pid) exited = 1;
  }
  /* What the command wrote before exiting is in the pipes: send it. Output of background processes
   * it left behind after this point is not waited for (they may run for hours). */
  if (master >= 0) {
    if (out_open) drain_tty(c, master);
  } else {
    int fds[2] = {out[0], err[0]};
    char kinds[2] = {'O', 'E'};
    for (int k = 0; k < 2; k++) {
      fcntl(fds[k], F_SETFL, O_NONBLOCK);
      ssize_t r;
      while ((r = read(fds[k], buf, sizeof buf)) > 0) send_frame(c, kinds[k], buf, (uint32_t)r);
    }
  }
  char msg[32];
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  snprintf(msg, sizeof msg, "%d %d", code, sig);
  finish(c, msg);
}
