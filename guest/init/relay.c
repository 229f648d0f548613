#define _GNU_SOURCE
#include "prism-init.h"

/*
 * `prism-init relay SOCKET`: the docker driver's way into a task's exec agent. The driver cannot
 * reach a socket inside a (possibly remote) engine's container, but it can `docker exec` this relay,
 * which connects to the agent and copies bytes both ways between its stdin/stdout and the agent. So
 * commands keep the agent's exact exit codes, signals and whole-tree kills, which a bare
 * `docker exec` cannot give.
 *
 * On stderr it writes "oom <n>\n" before connecting and again after the agent hung up: the task's
 * cgroup OOM-kill counter as seen from inside (v1 memory.oom_control or v2 memory.events; -1 when
 * unreadable), so the driver can tell an OOM kill of the command from another SIGKILL. At the end it
 * also writes "disk <room>\n" (disk_room below), from which the driver reports a full writable layer.
 * EOF on stdin means the driver went away: the relay shuts the connection down, and the agent kills
 * the command's tree, as it does for any daemon that hangs up.
 */

static long oom_kills(void) {
  static const char *files[] = {"/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    FILE *f = fopen(files[i], "re");
    if (!f) continue;
    char line[256];
    long n = -1;
    while (fgets(line, sizeof line, f)) {
      if (sscanf(line, "oom_kill %ld", &n) == 1) break;
    }
    fclose(f);
    if (n >= 0) return n;
  }
  return -1;
}

/*
 * Whether the task's root filesystem has room for 1 MiB more: 1 yes, 0 no, -1 unknown. The engine's
 * size limit (StorageOpt.size) is an XFS project quota on overlay2 (ENOSPC, which statfs would show)
 * but a btrfs qgroup elsewhere (EDQUOT, which statfs does not show), so the relay asks the filesystem
 * itself: it reserves 1 MiB in an unnamed file, which goes away on close. /.prism is the driver's
 * own directory in the image. The threshold is the oci driver's (task-disk.ts).
 */
static int disk_room(void) {
  int fd = open("/.prism", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0 && errno != ENOSPC && errno != EDQUOT) {
    /* No O_TMPFILE on this filesystem (overlayfs before Linux 6.6): a named file, unlinked at once. */
    char path[64];
    snprintf(path, sizeof path, "/.prism/disk-probe.%ld", (long)getpid());
    fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) unlink(path);
  }
  if (fd < 0) return errno == ENOSPC || errno == EDQUOT ? 0 : -1;
  int r = posix_fallocate(fd, 0, 1 << 20);
  close(fd);
  if (r == 0) return 1;
  return r == ENOSPC || r == EDQUOT ? 0 : -1;
}

static int copy_some(int from, int to) {
  char buf[65536];
  ssize_t r = read(from, buf, sizeof buf);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
  if (r <= 0) return 0;
  for (char *p = buf; r > 0;) {
    ssize_t w = write(to, p, (size_t)r);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return 0;
    p += w;
    r -= w;
  }
  return 1;
}

int relay(const char *path) {
  signal(SIGPIPE, SIG_IGN);
  fprintf(stderr, "oom %ld\n", oom_kills());
  fflush(stderr);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) return 2;
  strcpy(addr.sun_path, path);
  int s = -1;
  /* The agent binds its socket as the task starts; a command sent right after start may race it. */
  for (int attempt = 0; attempt < 1000; attempt++) {
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return 2;
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) break;
    int err = errno;
    close(s);
    s = -1;
    if (err != ENOENT && err != ECONNREFUSED) break;
    usleep(10000);
  }
  if (s < 0) {
    fprintf(stderr, "prism-init relay: cannot reach the exec agent at %s\n", path);
    return 3;
  }
  /*
   * One process per direction: a single loop blocked writing the command's stdin to the agent while
   * the agent is blocked writing the command's output back would deadlock (cat of a large input).
   */
  pid_t in = fork();
  if (in < 0) return 2;
  if (in == 0) {
    while (copy_some(0, s)) {
    }
    shutdown(s, SHUT_WR); /* the driver hung up: the agent kills the command's tree */
    _exit(0);
  }
  while (copy_some(s, 1)) {
  }
  kill(in, SIGKILL);
  waitpid(in, NULL, 0);
  close(s);
  fprintf(stderr, "oom %ld\n", oom_kills());
  fprintf(stderr, "disk %d\n", disk_room());
  return 0;
}
