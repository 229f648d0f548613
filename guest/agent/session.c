/*
 * Exec sessions: one command per channel, its stdin/stdout/stderr on pipes the serve loop polls.
 * Process handling follows guest/init/prism-init.c (become_user, child_exec); kill_tree is shared
 * with it (guest/common/proc-tree.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "proc-tree.h"
#include "seccomp.h"


/* Groups first, then gid, then uid, which also clears every capability (no SECBIT_KEEP_CAPS). */
static void become_user(const struct user_spec *u) {
  gid_t groups[MAX_GROUPS];
  for (int i = 0; i < u->ngroups; i++) groups[i] = u->groups[i];
  if (setgroups((size_t)u->ngroups, groups) != 0 || setgid(u->gid) != 0 || setuid(u->uid) != 0) {
    dprintf(2, "prism: cannot become user %u:%u: %s\n", u->uid, u->gid, strerror(errno));
    _exit(126);
  }
}

static unsigned long long nofile_limit;

void session_set_nofile(unsigned long long n) {
  nofile_limit = n;
}

/*
 * A terminal command's side: the pty slave as controlling terminal (the caller did setsid) and as
 * fds 0-2, owned by the user the command runs as, as login(1) leaves it.
 */
static void attach_tty(const char *slave, const struct user_spec *u) {
  int fd = open(slave, O_RDWR);
  if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) != 0) {
    dprintf(2, "prism: cannot attach the terminal %s: %s\n", slave, strerror(errno));
    _exit(126);
  }
  if (u && fchown(fd, u->uid, (gid_t)-1) != 0) dprintf(2, "prism: cannot hand the terminal to %u: %s\n", u->uid, strerror(errno));
  for (int i = 0; i < 3; i++) dup2(fd, i);
  if (fd > 2) close(fd);
}

static void child_exec(const struct start_req *r, const struct user_spec *u, const char *tty, int in_fd, int out_fd, int err_fd) {
  /* Before dropping to the user: raising a hard limit needs privilege, lowering it does not. */
  if (nofile_limit) {
    struct rlimit rl = {.rlim_cur = (rlim_t)nofile_limit, .rlim_max = (rlim_t)nofile_limit};
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  /* Handlers reset at exec by themselves; SIG_IGN survives it, and SIGPIPE is the agent's only one. */
  signal(SIGPIPE, SIG_DFL);
  setsid(); /* own process group: the whole command can be signalled at once */
  if (tty) {
    attach_tty(tty, u);
  } else {
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
  }
  /*
   * Root in the guest gets oci's capabilities only: without CAP_SYS_RESOURCE the maxOpenFiles hard
   * limit above holds, without CAP_SYS_PTRACE the agent (full capabilities) cannot be traced or its
   * memory read. Other users lose every capability at setuid and cannot regain one (no_new_privs).
   * Only a root agent has capabilities to drop: agent-test may run unprivileged on the host.
   */
  if ((!u || u->uid == 0) && geteuid() == 0 && caps_bound_to_task_set() != 0) {
    dprintf(2, "prism: cannot limit capabilities: %s\n", strerror(errno));
    _exit(126);
  }
  if (u) become_user(u);
  /*
   * As oci's noNewPrivileges: a setuid binary in the image (su, a planted copy) gives no privileges,
   * so a non-root sandbox user stays non-root inside the guest too. Root commands get it as well.
   */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    dprintf(2, "prism: cannot set no_new_privs: %s\n", strerror(errno));
    _exit(126);
  }
  if (chdir(r->cwd) != 0) {
    dprintf(2, "prism: cannot change directory to %s: %s\n", r->cwd, strerror(errno));
    _exit(126);
  }
  /* Last: it needs no_new_privs, and the agent's own calls above stay unfiltered. */
  if (seccomp_deny_install() != 0) {
    dprintf(2, "prism: cannot install the seccomp filter: %s\n", strerror(errno));
    _exit(126);
  }
  /* execvp looks PATH up in environ, so the command's own PATH must be in place first. */
  environ = r->envp;
  execvp(r->argv[0], r->argv);
  int err = errno;
  dprintf(2, "prism: cannot run %s: %s\n", r->argv[0], strerror(err));
  _exit(err == ENOENT ? 127 : 126);
}

struct session *session_find(struct agent *a, uint32_t channel) {
  for (int i = 0; i < a->nsessions; i++)
    if (a->sessions[i]->channel == channel) return a->sessions[i];
  return NULL;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void session_free(struct agent *a, struct session *s) {
  close_fd(&s->in_fd);
  close_fd(&s->out_fd);
  close_fd(&s->err_fd);
  close_fd(&s->pty_fd);
  a->stdin_pending -= buf_used(&s->pending);
  buf_free(&s->pending);
  for (int i = 0; i < a->nsessions; i++)
    if (a->sessions[i] == s) a->sessions[i] = a->sessions[--a->nsessions];
  free(s);
}

/* The zombie stays until reap() collects it, so s->pid cannot have been reused by then. */
void session_kill(struct agent *a, struct session *s) {
  kill_tree(s->pid, SIGKILL);
  session_free(a, s);
}

/*
 * vfork: the child borrows the agent's memory until it execs, so no page tables are copied and no
 * copy-on-write faults follow (under TCG each costs; this halves an exec's round trip). The agent is
 * single-threaded and suspended meanwhile; the child only makes syscalls, writes its own stack and
 * `environ`, which is put back here once the child has exec'd or exited.
 */
static pid_t spawn_child(const struct start_req *r, const struct user_spec *u, const char *tty, int in_fd, int out_fd, int err_fd) {
  char **saved = environ;
  pid_t pid = vfork();
  if (pid == 0) child_exec(r, u, tty, in_fd, out_fd, err_fd);
  environ = saved;
  return pid;
}

/* Our ends go non-blocking: the command's ends stay as a command expects. */
static void own_fds(struct session *s) {
  for (int *fd = &s->in_fd; fd <= &s->err_fd; fd++)
    if (*fd >= 0) fcntl(*fd, F_SETFL, O_NONBLOCK);
}

/*
 * Forks the command on a new pty of the requested size. The master is kept for ioctls and read and
 * written through two dups, so that a failed write (EIO) closes only the input side.
 */
static int spawn_tty(struct session *s, const struct start_req *r, const struct user_spec *u, const char **why) {
  char slave[64];
  struct winsize ws = {.ws_row = (unsigned short)r->rows, .ws_col = (unsigned short)r->cols};
  int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0 || ptsname_r(m, slave, sizeof slave) != 0 || ioctl(m, TIOCSWINSZ, &ws) != 0) {
    if (m >= 0) close(m);
    *why = "cannot open a terminal";
    return -1;
  }
  s->pty_fd = m;
  s->in_fd = fcntl(m, F_DUPFD_CLOEXEC, 0);
  s->out_fd = fcntl(m, F_DUPFD_CLOEXEC, 0);
  if (s->in_fd < 0 || s->out_fd < 0 || (s->pid = spawn_child(r, u, slave, -1, -1, -1)) < 0) {
    close_fd(&s->in_fd);
    close_fd(&s->out_fd);
    close_fd(&s->pty_fd);
    *why = "cannot fork: process limit reached";
    return -1;
  }
  own_fds(s);
  return 0;
}

/* Forks the command on fresh pipes; 0, or -1 with the reason in *why. */
static int spawn(struct session *s, const struct start_req *r, const struct user_spec *u, const char **why) {
  if (r->cols) return spawn_tty(s, r, u, why);
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rc = -1;
  if (r->want_stdin ? pipe2(in, O_CLOEXEC) : (in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
    *why = "cannot open stdin";
  } else if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
    *why = "cannot create pipes";
  } else if ((s->pid = spawn_child(r, u, NULL, in[0], out[1], err[1])) < 0) {
    *why = "cannot fork: process limit reached";
  } else {
    s->in_fd = in[1];
    s->out_fd = out[0];
    s->err_fd = err[0];
    in[1] = out[0] = err[0] = -1;
    own_fds(s);
    rc = 0;
  }
  for (int i = 0; i < 2; i++) {
    close_fd(&in[i]);
    close_fd(&out[i]);
    close_fd(&err[i]);
  }
  return rc;
}

void session_start(struct agent *a, uint32_t channel, char *payload, uint32_t len, int tty) {
  struct start_req r;
  struct user_spec u;
  const char *why = tty ? pty_start_parse(payload, len, &r) : start_parse(payload, len, &r);
  if (!why && r.user[0] && user_parse(r.user, &u) < 0) why = "malformed user field";
  if (!why && a->nsessions >= a->max_sessions) why = "too many sessions";
  struct session *s = why ? NULL : calloc(1, sizeof *s);
  if (!why && !s) why = "out of memory";
  if (s) {
    /* Read before the fork: an OOM kill of this command must come after the baseline. */
    *s = (struct session){.channel = channel, .in_fd = -1, .out_fd = -1, .err_fd = -1, .pty_fd = -1, .oom_before = sandbox_oom_kills(), .limit = OUT_WINDOW};
    if (spawn(s, &r, r.user[0] ? &u : NULL, &why) == 0) {
      a->sessions[a->nsessions++] = s;
    } else {
      free(s);
    }
  }
  if (why) session_fail(a, channel, why);
  start_free(&r);
}

void session_write_stdin(struct agent *a, struct session *s) {
  while (s->in_fd >= 0 && buf_used(&s->pending)) {
    ssize_t w = write(s->in_fd, s->pending.data + s->pending.off, buf_used(&s->pending));
    if (w > 0) {
      buf_consume(&s->pending, (size_t)w);
      a->stdin_pending -= (size_t)w;
    } else if (w < 0 && errno == EAGAIN) {
      return;
    } else if (w >= 0 || errno != EINTR) {
      /* The command closed its stdin (EPIPE): what it did not read is dropped. */
      a->stdin_pending -= buf_used(&s->pending);
      buf_free(&s->pending);
      close_fd(&s->in_fd);
    }
  }
  if (s->stdin_closing) close_fd(&s->in_fd);
}

void session_input(struct agent *a, struct session *s, char type, const char *payload, uint32_t len) {
  if (type == F_KILL) {
    unsigned sig = len == 1 ? (unsigned char)payload[0] : 0;
    if (sig < 1 || sig > 64) {
      uint32_t channel = s->channel;
      session_kill(a, s);
      session_fail(a, channel, "K wants one byte, a signal from 1 to 64");
      return;
    }
    /* On a terminal a signal is for its foreground job, as a keyboard's would be; SIGKILL ends all. */
    pid_t fg = s->pty_fd >= 0 && sig != SIGKILL ? tcgetpgrp(s->pty_fd) : -1;
    if (fg <= 0 || kill(-fg, (int)sig) != 0) kill_tree(s->pid, (int)sig);
    return;
  }
  if (type == F_WINDOW) {
    if (len != 8) {
      uint32_t channel = s->channel;
      session_kill(a, s);
      session_fail(a, channel, "W wants 8 bytes, a big-endian output limit");
      return;
    }
    uint64_t limit = 0;
    for (int i = 0; i < 8; i++) limit = limit << 8 | (unsigned char)payload[i];
    if (limit > s->limit) s->limit = limit;
    return;
  }
  if (s->in_fd < 0 || s->stdin_closing) return;
  if (type == F_CLOSE) {
    if (s->pty_fd >= 0) return; /* a terminal's end of input is ^D, sent as data */
    s->stdin_closing = 1;
  } else if (buf_append(&s->pending, payload, len) == 0) {
    a->stdin_pending += len;
  }
  session_write_stdin(a, s);
}

/* Moves up to `max` bytes from a command's pipe straight into an O/E frame; read()'s result. */
static ssize_t pipe_to_frame(struct agent *a, struct session *s, int fd, char type, size_t max) {
  if (buf_reserve(&a->out, FRAME_HDR + max) < 0) return errno = ENOMEM, -1;
  char *at = a->out.data + a->out.len;
  ssize_t r = read(fd, at + FRAME_HDR, max);
  if (r > 0) {
    frame_hdr_encode((unsigned char *)at, type, s->channel, (uint32_t)r);
    a->out.len += FRAME_HDR + (size_t)r;
    s->sent += (uint64_t)r;
  }
  return r;
}

int session_may_send(const struct session *s) { return s->sent < s->limit; }

/* Reads no more than the host's window allows: the rest stays in the pipe, and the command blocks on it. */
void session_readable(struct agent *a, struct session *s, int is_err) {
  int *fd = is_err ? &s->err_fd : &s->out_fd;
  /* stdout may have used up the window in this same round */
  if (!session_may_send(s)) return;
  uint64_t room = s->limit - s->sent;
  ssize_t r = pipe_to_frame(a, s, *fd, is_err ? F_STDERR : F_STDOUT, room < PIPE_CHUNK ? (size_t)room : PIPE_CHUNK);
  if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) close_fd(fd);
}

/*
 * What the command wrote before exiting is in the pipe now: send exactly that much (FIONREAD), not
 * "until EOF" or "until empty", which a background process it left could keep going for hours.
 */
static void drain(struct agent *a, struct session *s, int fd, char type) {
  int left = 0;
  if (fd < 0 || ioctl(fd, FIONREAD, &left) < 0) return;
  while (left > 0) {
    ssize_t r = pipe_to_frame(a, s, fd, type, left < PIPE_CHUNK ? (size_t)left : PIPE_CHUNK);
    if (r <= 0) return;
    left -= (int)r;
  }
}

void session_resize(struct session *s, const char *payload, uint32_t len) {
  unsigned cols, rows;
  if (s->pty_fd < 0 || size_parse(payload, len, &cols, &rows) < 0) return;
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  ioctl(s->pty_fd, TIOCSWINSZ, &ws); /* the kernel sends SIGWINCH to the foreground job */
}

/*
 * A terminal's output is not in a pipe: what the command wrote may still be in the kernel's flip
 * buffer when it is reaped, and FIONREAD does not count that. Read until the slave is closed
 * everywhere (EIO; the kernel hands over what was in flight first), or for at most 50 ms, which
 * means a background process still holds the terminal (and may write to it forever); only then does
 * the loop block, that long.
 */
static void drain_tty(struct agent *a, struct session *s) {
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (s->out_fd >= 0) {
    struct pollfd p = {s->out_fd, POLLIN, 0};
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = 50 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) return;
    ssize_t r = pipe_to_frame(a, s, s->out_fd, F_STDOUT, PIPE_CHUNK);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return;
  }
}

void session_reaped(struct agent *a, pid_t pid, int status) {
  struct session *s = NULL;
  for (int i = 0; i < a->nsessions && !s; i++)
    if (a->sessions[i]->pid == pid) s = a->sessions[i];
  if (!s) return; /* an orphan reparented to PID 1, or a killed session's command */
  if (s->pty_fd >= 0) {
    drain_tty(a, s);
  } else {
    drain(a, s, s->out_fd, F_STDOUT);
    drain(a, s, s->err_fd, F_STDERR);
  }
  char msg[32];
  int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  /*
   * The OOM killer sends SIGKILL; if the cgroup counted a kill while the command ran, it is taken as
   * the cause (as the oci runtime does with its cgroup; a kill of a concurrent command in the same
   * sandbox at that moment would be blamed too). Read only then: an ordinary exit costs nothing.
   */
  int oom = sig == SIGKILL && sandbox_oom_kills() > s->oom_before;
  int n = snprintf(msg, sizeof msg, "%d %d%s", sig ? 128 + sig : WEXITSTATUS(status), sig, oom ? " oom" : "");
  emit(a, F_EXIT, s->channel, msg, (size_t)n);
  session_free(a, s);
}
