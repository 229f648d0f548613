/*
 * prism-init: PID 1 of every oci task, and its exec agent.
 *
 * Images may ship without a shell or sleep, so the driver bind-mounts this static binary into every
 * container. As PID 1 it (a) reaps every zombie (orphans are reparented to it) and (b) exits on
 * SIGTERM/SIGINT, since the kernel applies no default action to signals sent to a namespace's init.
 *
 * It also runs commands for the daemon. `runc exec` costs a Go runtime start and a namespace join per
 * command (~12 ms); a fork inside the task costs well under one. The daemon reaches the agent through
 * a unix socket it can never see from inside the task: the host side runs
 *     prism-init listen PATH -- runc run --preserve-fds 1 ...
 * (optionally with `--overlay OPTIONS TARGET`, mounting the task's rootfs first), which binds PATH on the host, puts the listening socket on fd 3 and execs runc, which hands fd 3 to
 * the container's init. Sandboxed code cannot reach it (every agent fd is close-on-exec).
 *
 * Protocol (one connection per command; frames are type:u8, length:u32 big-endian, payload):
 *   daemon -> agent  'S' start: NUL-terminated fields: cwd, "stdin"|"", argc, argv..., envc, env...,
 *                        and optionally the user as "uid gid g1,g2" (absent: root, the task's own)
 *                    'I' stdin bytes   'C' close stdin   'K' signal the command's tree (payload: u8)
 *   agent -> daemon  'O' stdout bytes  'E' stderr bytes  'X' exit: "<exitCode> <signal>"
 * The exit frame comes once the command exited and what it wrote is drained. A daemon that hangs up
 * before that gets the command's whole process tree killed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define LISTEN_FD 3
#define MAX_FRAME (1u << 20)
#define MAX_ARGS 8192
#define STDIN_HIGH_WATER (4u << 20)

static int write_all(int fd, const void *buf, size_t n) {
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

/* Splits a start frame's NUL-terminated fields. */
static char *next_field(char **cur, char *end) {
  if (*cur >= end) return NULL;
  char *f = *cur;
  char *nul = memchr(f, 0, (size_t)(end - f));
  if (!nul) return NULL;
  *cur = nul + 1;
  return f;
}

/*
 * Kills a command and everything it started: its process group, then (for anything that left the
 * group) every descendant found through /proc, stopped first so none can fork while we look.
 */
/* Parent pid of `pid` from /proc, or -1. */
static pid_t parent_of(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *rp = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
  int ppid = -1;
  if (!rp || sscanf(rp + 2, "%*c %d", &ppid) != 1) return -1;
  return ppid;
}

#define MAX_TREE 65536

/*
 * Kills a command and everything it started. Descendants are found through /proc parent links and
 * stopped as they are found, so none can fork or be reparented while we look; then all of them, the
 * command's process group (which catches children that were already orphaned) and the command die.
 */
static void kill_tree(pid_t root, int sig) {
  if (sig != SIGKILL) {
    kill(-root, sig);
    kill(root, sig);
    return;
  }
  static pid_t tree[MAX_TREE];
  int count = 0;
  kill(root, SIGSTOP);
  for (int round = 0, grew = 1; grew && round < 16; round++) {
    grew = 0;
    DIR *d = opendir("/proc");
    if (!d) break;
    struct dirent *e;
    while ((e = readdir(d)) && count < MAX_TREE) {
      pid_t pid = (pid_t)atoi(e->d_name);
      if (pid <= 1 || pid == root || pid == getpid()) continue;
      int known = 0;
      for (int i = 0; i < count && !known; i++) known = tree[i] == pid;
      if (known) continue;
      for (pid_t cur = pid, depth = 0; depth < 256 && cur > 1; depth++) {
        pid_t pp = parent_of(cur);
        if (pp == root) {
          kill(pid, SIGSTOP);
          tree[count++] = pid;
          grew = 1;
          break;
        }
        cur = pp;
      }
    }
    closedir(d);
  }
  for (int i = 0; i < count; i++) kill(tree[i], SIGKILL);
  kill(-root, SIGKILL);
  kill(root, SIGKILL);
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

static void child_exec(char *cwd, char **argv, char **envp, const char *user, int in_fd, int out_fd, int err_fd) {
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
  setsid(); /* own process group: the whole command can be signalled at once */
  dup2(in_fd, 0);
  dup2(out_fd, 1);
  dup2(err_fd, 2);
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

struct outbuf {
  char *data;
  size_t len;
};

/* Serves one command on connection `c`; runs in its own process, never returns. */
static void serve(int c) {
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
  /* Optional trailing field (newer daemons): the user to run as, "uid gid groups". */
  char *user = next_field(&cur, end);

  int in[2] = {-1, -1}, out[2], err[2];
  if (want_stdin[0]) {
    if (pipe2(in, O_CLOEXEC) < 0) _exit(1);
  } else if ((in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
    _exit(1);
  }
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) _exit(1);

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  pid_t pid = fork();
  if (pid < 0) {
    const char *msg = "prism: cannot fork: process limit reached\n";
    send_frame(c, 'E', msg, (uint32_t)strlen(msg));
    send_frame(c, 'X', "126 0", 5);
    _exit(0);
  }
  if (pid == 0) child_exec(cwd, argv, envp, user, in[0], out[1], err[1]);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  int in_w = in[1];
  if (in_w >= 0) fcntl(in_w, F_SETFL, O_NONBLOCK);

  struct outbuf pending = {NULL, 0};
  int stdin_closing = 0, conn_open = 1, out_open = 1, err_open = 1, status = 0;
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
      else if (r == 0 || errno != EINTR) out_open = 0;
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
      } else if (type == 'C') {
        stdin_closing = 1;
      } else if (type == 'K' && len == 1) {
        kill_tree(pid, (unsigned char)data[0]);
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
  int fds[2] = {out[0], err[0]};
  char kinds[2] = {'O', 'E'};
  for (int k = 0; k < 2; k++) {
    fcntl(fds[k], F_SETFL, O_NONBLOCK);
    ssize_t r;
    while ((r = read(fds[k], buf, sizeof buf)) > 0) send_frame(c, kinds[k], buf, (uint32_t)r);
  }
  char msg[32];
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  int m = snprintf(msg, sizeof msg, "%d %d", code, sig);
  send_frame(c, 'X', msg, (uint32_t)m);
  _exit(0);
}

/*
 * Host side: optionally mount the task's overlay rootfs (saves the daemon spawning mount(8) on the
 * create path), bind PATH, put the listener on fd 3 and exec the rest of argv (runc run ...).
 */
static int listen_and_exec(const char *path, const char *overlay_opts, const char *overlay_target, char **cmd) {
  if (overlay_opts && mount("overlay", overlay_target, "overlay", 0, overlay_opts) != 0) {
    fprintf(stderr, "prism-init: cannot mount overlay on %s: %s\n", overlay_target, strerror(errno));
    return 2;
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    fprintf(stderr, "prism-init: socket path too long: %s\n", path);
    return 2;
  }
  strcpy(addr.sun_path, path);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  unlink(path);
  if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(path, 0600) < 0 || listen(s, 128) < 0) {
    fprintf(stderr, "prism-init: cannot listen on %s: %s\n", path, strerror(errno));
    return 2;
  }
  if (s != LISTEN_FD && (dup2(s, LISTEN_FD) < 0 || close(s) < 0)) return 2;
  execvp(cmd[0], cmd);
  fprintf(stderr, "prism-init: cannot run %s: %s\n", cmd[0], strerror(errno));
  return 127;
}

/*
 * Host side, for the image store: `prism-init layer-fixup DEST` applies what Node cannot (it has no
 * mknod or setxattr) to a freshly unpacked layer, all in one process however many entries there are.
 * stdin holds records of NUL-terminated fields, paths relative to DEST:
 *   "w" REL              overlayfs whiteout: character device 0:0
 *   "o" REL              opaque directory: trusted.overlay.opaque=y ("" is DEST itself)
 *   "x" REL NAME HEX     extended attribute NAME with the hex-encoded value HEX
 * Every component of REL is opened with O_NOFOLLOW, so nothing is ever reached through a symlink.
 * Exit status: 0 all applied, 1 a system call failed, 2 malformed input (message on stderr).
 */
#define FIXUP_MAX_INPUT (64u << 20)

/* An fd for the parent directory of `rel` beneath `root` (never through a symlink); *leaf is its last component. */
static int fixup_parent(int root, char *rel, char **leaf) {
  int fd = dup(root);
  char *save = NULL, *prev = NULL;
  for (char *c = strtok_r(rel, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
    if (strcmp(c, ".") == 0 || strcmp(c, "..") == 0) {
      close(fd);
      errno = EINVAL;
      return -1;
    }
    if (prev) {
      int next = openat(fd, prev, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      close(fd);
      if (next < 0) return -1;
      fd = next;
    }
    prev = c;
  }
  *leaf = prev;
  return fd;
}

static int fixup_hex(const char *hex, unsigned char *out, size_t *n) {
  size_t len = strlen(hex);
  if (len % 2) return -1;
  for (size_t i = 0; i < len / 2; i++) {
    unsigned int b;
    if (sscanf(hex + 2 * i, "%2x", &b) != 1) return -1;
    out[i] = (unsigned char)b;
  }
  *n = len / 2;
  return 0;
}

/* Applies one record; -1 with errno set on failure. */
static int fixup_one(int root, char op, char *rel, const char *name, const unsigned char *val, size_t vlen) {
  char *leaf = NULL;
  int dir = fixup_parent(root, rel, &leaf);
  if (dir < 0) return -1;
  int rc = -1;
  if (op == 'w') {
    rc = leaf ? mknodat(dir, leaf, S_IFCHR, makedev(0, 0)) : (errno = EINVAL, -1);
  } else {
    int fd = leaf ? openat(dir, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | (op == 'o' ? O_DIRECTORY : 0)) : openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      rc = op == 'o' ? fsetxattr(fd, "trusted.overlay.opaque", "y", 1, 0) : fsetxattr(fd, name, val, vlen, 0);
      close(fd);
    }
  }
  int saved = errno;
  close(dir);
  errno = saved;
  return rc;
}

/* All of stdin, NUL-terminated after *len bytes; NULL on error or past FIXUP_MAX_INPUT. */
static char *read_all_stdin(size_t *len) {
  size_t cap = 1 << 16;
  char *buf = malloc(cap + 1);
  *len = 0;
  while (buf) {
    if (*len == cap) {
      char *grown = cap < FIXUP_MAX_INPUT ? realloc(buf, (cap *= 2) + 1) : NULL;
      if (!grown) break;
      buf = grown;
    }
    ssize_t r = read(0, buf + *len, cap - *len);
    if (r == 0) {
      buf[*len] = 0;
      return buf;
    }
    if (r < 0 && errno != EINTR) break;
    if (r > 0) *len += (size_t)r;
  }
  free(buf);
  return NULL;
}

static int layer_fixup(const char *dest) {
  size_t len;
  char *buf = read_all_stdin(&len);
  int root = open(dest, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (!buf || root < 0) {
    fprintf(stderr, "prism-init layer-fixup: cannot read input or open %s: %s\n", dest, strerror(errno));
    return 1;
  }
  unsigned char *val = malloc(len / 2 + 1);
  char *cur = buf, *end = buf + len, *op;
  while (val && (op = next_field(&cur, end))) {
    char *rel = next_field(&cur, end), *name = NULL, *hex = NULL;
    size_t vlen = 0;
    if (op[0] == 'x') {
      name = next_field(&cur, end);
      hex = next_field(&cur, end);
    }
    if (!rel || strlen(op) != 1 || !strchr("wox", op[0]) || (op[0] == 'x' && (!hex || fixup_hex(hex, val, &vlen) < 0))) {
      fprintf(stderr, "prism-init layer-fixup: malformed input\n");
      return 2;
    }
    char shown[4096];
    snprintf(shown, sizeof shown, "%s", rel);
    if (fixup_one(root, op[0], rel, name, val, vlen) < 0) {
      fprintf(stderr, "prism-init layer-fixup: %s %s%s%s: %s\n", op, shown, name ? " " : "", name ? name : "", strerror(errno));
      return 1;
    }
  }
  return val ? 0 : 1;
}

int main(int argc, char **argv) {
  /* prism-init layer-fixup DEST < records */
  if (argc == 3 && strcmp(argv[1], "layer-fixup") == 0) return layer_fixup(argv[2]);
  /* prism-init listen PATH [--overlay OPTIONS TARGET] -- CMD... */
  if (argc >= 5 && strcmp(argv[1], "listen") == 0) {
    int i = 3;
    const char *opts = NULL, *target = NULL;
    if (argc >= 8 && strcmp(argv[3], "--overlay") == 0) {
      opts = argv[4];
      target = argv[5];
      i = 6;
    }
    if (strcmp(argv[i], "--") == 0 && i + 1 < argc) return listen_and_exec(argv[2], opts, target, argv + i + 1);
    fprintf(stderr, "usage: prism-init listen PATH [--overlay OPTIONS TARGET] -- CMD...\n");
    return 2;
  }

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGPIPE);
  /* Block before anything else so no signal is lost; they are consumed through a signalfd. */
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return 1;
  int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) return 1;

  /* fd 3 is the agent's listening socket when the driver passed one; otherwise only reap. */
  int opt = 0;
  socklen_t optlen = sizeof opt;
  int lfd = getsockopt(LISTEN_FD, SOL_SOCKET, SO_ACCEPTCONN, &opt, &optlen) == 0 && opt ? LISTEN_FD : -1;
  if (lfd >= 0) fcntl(lfd, F_SETFD, FD_CLOEXEC);

  for (;;) {
    struct pollfd p[2] = {{sfd, POLLIN, 0}, {lfd, POLLIN, 0}};
    if (poll(p, lfd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) return 0;
        /* SIGHUP, SIGQUIT, SIGUSR1/2, SIGPIPE: ignored, so a stray signal cannot end the task. */
      }
      /* One SIGCHLD may stand for many exits; collect until none are left. */
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
    }
    if (lfd >= 0 && (p[1].revents & POLLIN)) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) continue;
      pid_t h = fork();
      if (h == 0) {
        close(sfd);
        close(lfd);
        serve(c);
      }
      close(c);
    }
  }
}
