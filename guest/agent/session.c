/*
 * Exec sessions: one command per channel, its stdin/stdout/stderr on pipes the serve loop polls.
 * Process handling follows guest/init/prism-init.c (become_user, child_exec); kill_tree is shared
 * with it (guest/common/proc-tree.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "proc-tree.h"


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

static void child_exec(const struct start_req *r, const struct user_spec *u, int in_fd, int out_fd, int err_fd) {
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
  dup2(in_fd, 0);
  dup2(out_fd, 1);
  dup2(err_fd, 2);
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
static pid_t spawn_child(const struct start_req *r, const struct user_spec *u, int in_fd, int out_fd, int err_fd) {
  char **saved = environ;
  pid_t pid = vfork();
  if (pid == 0) child_exec(r, u, in_fd, out_fd, err_fd);
  environ = saved;
  return pid;
}

/* Forks the command on fresh pipes; 0, or -1 with the reason in *why. */
static int spawn(struct session *s, const struct start_req *r, const struct user_spec *u, const char **why) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rc = -1;
  if (r->want_stdin ? pipe2(in, O_CLOEXEC) : (in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
    *why = "cannot open stdin";
  } else if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
    *why = "cannot create pipes";
  } else if ((s->pid = spawn_child(r, u, in[0], out[1], err[1])) < 0) {
    *why = "cannot fork: process limit reached";
  } else {
    /* Only our ends go non-blocking: the command's ends stay as a command expects. */
    s->in_fd = in[1];
    s->out_fd = out[0];
    s->err_fd = err[0];
    in[1] = out[0] = err[0] = -1;
    for (int *fd = &s->in_fd; fd <= &s->err_fd; fd++)
      if (*fd >= 0) fcntl(*fd, F_SETFL, O_NONBLOCK);
    rc = 0;
  }
  for (int i = 0; i < 2; i++) {
    close_fd(&in[i]);
    close_fd(&out[i]);
    close_fd(&err[i]);
  }
  return rc;
}

void session_start(struct agent *a, uint32_t channel, char *payload, uint32_t len) {
  struct start_req r;
  struct user_spec u;
  const char *why = start_parse(payload, len, &r);
  if (!why && r.user[0] && user_parse(r.user, &u) < 0) why = "malformed user field";
  if (!why && a->nsessions >= a->max_sessions) why = "too many sessions";
  struct session *s = why ? NULL : calloc(1, sizeof *s);
  if (!why && !s) why = "out of memory";
  if (s) {
    /* Read before the fork: an OOM kill of this command must come after the baseline. */
    *s = (struct session){.channel = channel, .in_fd = -1, .out_fd = -1, .err_fd = -1, .oom_before = sandbox_oom_kills()};
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
    kill_tree(s->pid, (int)sig);
    return;
  }
  if (s->in_fd < 0 || s->stdin_closing) return;
  if (type == F_CLOSE) {
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
  }
  return r;
}

void session_readable(struct agent *a, struct session *s, int is_err) {
  int *fd = is_err ? &s->err_fd : &s->out_fd;
  ssize_t r = pipe_to_frame(a, s, *fd, is_err ? F_STDERR : F_STDOUT, PIPE_CHUNK);
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

void session_reaped(struct agent *a, pid_t pid, int status) {
  struct session *s = NULL;
  for (int i = 0; i < a->nsessions && !s; i++)
    if (a->sessions[i]->pid == pid) s = a->sessions[i];
  if (!s) return; /* an orphan reparented to PID 1, or a killed session's command */
  drain(a, s, s->out_fd, F_STDOUT);
  drain(a, s, s->err_fd, F_STDERR);
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
