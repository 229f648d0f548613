/*
 * Process-tree kill shared by prism-init's exec agent (oci, docker) and the microVM guest agent: one
 * implementation of "kill a command and everything it started", built into both (glibc and musl).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proc-tree.h"

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
 * Other signals go to the group only; if the child has not reached setsid() yet, to the child.
 */
void kill_tree(pid_t root, int sig) {
  if (sig != SIGKILL) {
    if (kill(-root, sig) != 0) kill(root, sig);
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
      for (pid_t cur = pid, depth = 0; !known && depth < 256 && cur > 1; depth++) {
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
