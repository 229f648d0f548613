/*
 * `prism-init fs watch DIR 0|1`: changes under DIR as they happen (1: in every subdirectory too, those
 * made later included), for the E2B gateway's WatchDir (src/e2b/envd-watch.ts).
 *
 * Output, one line per item, flushed at once: first `ready` once every watch is in place (so the
 * daemon can tell its client the watch is on), then `<event> <name>` with <event> one of create,
 * write, remove, rename, chmod (fsnotify's five, as envd reports them) and <name> the path relative to
 * DIR with \ and newline escaped as \\ and \n. Ends with exit 0 when DIR itself is removed or moved,
 * exit 1 with "<ERRNAME> ..." on stderr on errors (ENOSPC: the kernel's inotify watch limit), and at
 * once when stdout is closed (the daemon went away).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "fs-helper.h"

#define MASK (IN_CREATE | IN_MOVED_TO | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)

static int ifd;
static int recursive;
static int root_wd = -1;
/* Relative directory of each watch descriptor ("" for the root); NULL when unused. */
static char **dirs;
static size_t ndirs;

static void out(const char *line, size_t len) {
  while (len > 0) {
    ssize_t n = write(1, line, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(0); /* nobody reads any more */
    line += n;
    len -= (size_t)n;
  }
}

static void emit(const char *event, const char *rel) {
  static char line[2 * FS_MAX_NAME + 32];
  size_t n = (size_t)snprintf(line, sizeof line, "%s ", event);
  for (const char *p = rel; *p && n < sizeof line - 3; p++) {
    if (*p == '\\') line[n++] = '\\', line[n++] = '\\';
    else if (*p == '\n') line[n++] = '\\', line[n++] = 'n';
    else line[n++] = *p;
  }
  line[n++] = '\n';
  out(line, n);
}

static void remember(int wd, const char *rel) {
  if ((size_t)wd >= ndirs) {
    size_t want = (size_t)wd * 2 + 16;
    char **grown = realloc(dirs, want * sizeof *dirs);
    if (!grown) fs_fail(ENOMEM, "watch table");
    memset(grown + ndirs, 0, (want - ndirs) * sizeof *dirs);
    dirs = grown;
    ndirs = want;
  }
  free(dirs[wd]);
  dirs[wd] = strdup(rel);
  if (!dirs[wd]) fs_fail(ENOMEM, "watch table");
}

static const char *root_path;
static size_t root_len;

static int add_one(const char *path) {
  int wd = inotify_add_watch(ifd, path, MASK);
  if (wd < 0) {
    if (errno == ENOENT || errno == ENOTDIR || errno == EACCES) return 0; /* gone or closed meanwhile */
    fs_fail(errno, path);
  }
  const char *rel = path + root_len;
  while (*rel == '/') rel++;
  remember(wd, rel);
  return 0;
}

static int add_walk(const char *path, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)f;
  if (flag == FTW_D) add_one(path);
  return 0;
}

/* Watches `path` (absolute or relative to the cwd) and, when recursive, every directory below it. */
static void add_tree(const char *path) {
  if (!recursive) {
    add_one(path);
    return;
  }
  if (nftw(path, add_walk, 32, FTW_PHYS) != 0 && errno != ENOENT) fs_fail(errno, path);
}

int fs_watch(const char *dir, int rec) {
  signal(SIGPIPE, SIG_IGN);
  recursive = rec;
  struct stat st;
  if (stat(dir, &st) != 0) fs_fail(errno, dir);
  if (!S_ISDIR(st.st_mode)) fs_fail(ENOTDIR, dir);
  ifd = inotify_init1(IN_CLOEXEC);
  if (ifd < 0) fs_fail(errno, "inotify_init1");
  root_path = dir;
  root_len = strlen(dir);
  root_wd = inotify_add_watch(ifd, dir, MASK);
  if (root_wd < 0) fs_fail(errno, dir);
  remember(root_wd, "");
  if (recursive) add_tree(dir);
  out("ready\n", 6);
  static char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
  static char rel[2 * FS_MAX_NAME + 2], abs_path[3 * FS_MAX_NAME + 4];
  for (;;) {
    ssize_t n = read(ifd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fs_fail(n < 0 ? errno : EIO, "read inotify");
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      p += sizeof *ev + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) fs_fail(EOVERFLOW, "inotify queue overflowed: events were lost");
      if (ev->wd == root_wd && (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))) return 0;
      if (ev->mask & IN_IGNORED) {
        if ((size_t)ev->wd < ndirs) free(dirs[ev->wd]), dirs[ev->wd] = NULL;
        continue;
      }
      if (ev->len == 0 || (size_t)ev->wd >= ndirs || !dirs[ev->wd]) continue; /* events on a subdir itself */
      const char *base = dirs[ev->wd];
      snprintf(rel, sizeof rel, "%s%s%s", base, *base ? "/" : "", ev->name);
      const char *event = NULL;
      if (ev->mask & (IN_CREATE | IN_MOVED_TO)) event = "create";
      else if (ev->mask & IN_MODIFY) event = "write";
      else if (ev->mask & IN_DELETE) event = "remove";
      else if (ev->mask & IN_MOVED_FROM) event = "rename";
      else if (ev->mask & IN_ATTRIB) event = "chmod";
      if (event) emit(event, rel);
      if (recursive && (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
        snprintf(abs_path, sizeof abs_path, "%s/%s", root_path, rel);
        add_tree(abs_path);
      }
    }
  }
}
