/*
 * `prism-init fs archive-out PATH` and `archive-in DIR`: a directory tree as a record stream (see
 * fs-helper.c for the record), which the daemon turns into a tar and back (src/service/file-archive.ts).
 * Tar parsing stays out of C: the daemon refuses absolute names and `..` before anything reaches here;
 * this side checks names again and never follows a symlink below DIR, so an archive cannot write
 * through a link it planted itself (the classic "link, then file under the link").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "fs-helper.h"

static void put_file_bytes(const char *path, const struct stat *st) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) fs_fail(errno, path);
  static char buf[1 << 16];
  long long left = st->st_size;
  while (left > 0) {
    ssize_t n = read(fd, buf, left < (long long)sizeof buf ? (size_t)left : sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fs_fail(errno, path);
    /* The file shrank while being read: the record promised st_size bytes, so pad with zeros. */
    if (n == 0) {
      memset(buf, 0, sizeof buf);
      n = left < (long long)sizeof buf ? (ssize_t)left : (ssize_t)sizeof buf;
    }
    if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) fs_fail(EPIPE, "write stdout");
    left -= n;
  }
  close(fd);
}

/* Filesystems whose "files" are kernel state, not content: listed as directories, never descended. */
static int pseudo_fs(const char *path) {
  struct statfs sf;
  if (statfs(path, &sf) != 0) return 0;
  switch ((unsigned long)sf.f_type) {
    case 0x9fa0:     /* proc */
    case 0x62656572: /* sysfs */
    case 0x1cd1:     /* devpts */
    case 0x27e0eb:   /* cgroup */
    case 0x63677270: /* cgroup2 */
    case 0x64626720: /* debugfs */
    case 0x74726163: /* tracefs */
      return 1;
  }
  return 0;
}

/* Emits `path` (named `name` in the archive) and, for a directory, everything below it. */
static void emit(char *path, size_t plen, char *name, size_t nlen) {
  struct stat st;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT) return; /* removed while walking */
    fs_fail(errno, path);
  }
  char type = type_of(st.st_mode);
  if (type == 'o') return; /* devices, FIFOs, sockets: not file content */
  struct stat s = st;
  if (type != 'f') s.st_size = 0;
  char link[FS_MAX_NAME] = "";
  if (type == 'l') {
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0) fs_fail(errno, path);
    link[n] = 0;
  }
  if (nlen > 0) put_record(type, &s, name, link);
  if (type == 'f') put_file_bytes(path, &st);
  if (type != 'd' || pseudo_fs(path)) return;
  DIR *d = opendir(path);
  if (!d) fs_fail(errno, path);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    size_t k = strlen(e->d_name);
    if (plen + k + 2 > FS_MAX_NAME || nlen + k + 2 > FS_MAX_NAME) fs_fail(ENAMETOOLONG, path);
    /* Children are appended to the shared buffers in place and cut off again after. */
    size_t cp = plen == 1 ? 1 : plen + 1; /* plen == 1 only for "/" (realpath) */
    if (plen > 1) path[plen] = '/';
    memcpy(path + cp, e->d_name, k + 1);
    size_t cn = nlen ? nlen + 1 : 0;
    if (nlen) name[nlen] = '/';
    memcpy(name + cn, e->d_name, k + 1);
    emit(path, cp + k, name, cn + k);
    path[plen] = 0;
    name[nlen] = 0;
  }
  closedir(d);
}

/*
 * Entries are named like `docker cp`'s: the last component of PATH, then the path below it ("/"
 * itself: its entries from the top). Links below PATH are archived as links, never followed; the
 * contents of /proc, /sys and the like are left out (endless kernel state, not files).
 */
int fs_archive_out(const char *path) {
  static char root[FS_MAX_NAME], name[FS_MAX_NAME];
  if (!realpath(path, root)) fs_fail(errno, path);
  char copy[FS_MAX_NAME];
  snprintf(copy, sizeof copy, "%s", path);
  snprintf(name, sizeof name, "%s", strcmp(root, "/") == 0 ? "" : basename(copy));
  emit(root, strlen(root), name, strlen(name));
  return 0;
}

/* A relative name without `..`, as the daemon sends; anything else means a confused sender. */
static void check_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || name[0] == '/' || name[n - 1] == '/') fs_fail(EINVAL, name);
  for (const char *p = name; p; p = strchr(p, '/') ? strchr(p, '/') + 1 : NULL)
    if (p[0] == '.' && p[1] == '.' && (p[2] == '/' || p[2] == 0)) fs_fail(EINVAL, name);
}

/*
 * Opens the directory `rel` below `root` one component at a time with O_NOFOLLOW: a symlink on the
 * way is refused (ELOOP), never followed. Missing components are created (0755) when `create`.
 */
static int walk(int root, const char *rel, int create) {
  char copy[FS_MAX_NAME];
  snprintf(copy, sizeof copy, "%s", rel);
  int fd = dup(root);
  char *save = NULL;
  for (char *c = strtok_r(copy, "/", &save); c && fd >= 0; c = strtok_r(NULL, "/", &save)) {
    if (strcmp(c, ".") == 0) continue;
    int next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT && create && mkdirat(fd, c, 0755) == 0)
      next = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) fs_fail(errno == ENOTDIR ? ELOOP : errno, rel);
    close(fd);
    fd = next;
  }
  if (fd < 0) fs_fail(errno, rel);
  return fd;
}

/* Splits "a/b/c" into its parent "a/b" (or ".") and last component "c", in place. */
static char *split_last(char *name) {
  char *slash = strrchr(name, '/');
  if (!slash) return name;
  *slash = 0;
  return slash + 1;
}

/* Makes room for a new entry `last` in `pfd`: an old non-directory is replaced, an old directory only if empty. */
static void clear_slot(int pfd, const char *last, const char *name) {
  struct stat st;
  if (fstatat(pfd, last, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (unlinkat(pfd, last, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0) fs_fail(S_ISDIR(st.st_mode) ? EISDIR : errno, name);
}

struct dir_meta {
  char *name;
  mode_t mode;
  struct timespec times[2];
};

int fs_archive_in(const char *dir) {
  make_parents(dir, 1, 0755);
  int root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) fs_fail(errno, dir);
  static struct reader r;
  static char type[8], mode_s[16], sec_s[32], nsec_s[32], size_s[32], name[FS_MAX_NAME], link[FS_MAX_NAME];
  struct dir_meta *dirs = NULL;
  size_t ndirs = 0;
  for (;;) {
    if (rd_field(&r, type, sizeof type) < 0) fs_fail(EPIPE, "the archive ended early");
    if (strcmp(type, "E") == 0) break;
    rd_field(&r, mode_s, sizeof mode_s), rd_field(&r, sec_s, sizeof sec_s), rd_field(&r, nsec_s, sizeof nsec_s);
    rd_field(&r, size_s, sizeof size_s), rd_field(&r, name, sizeof name), rd_field(&r, link, sizeof link);
    check_name(name);
    mode_t mode = (mode_t)strtoul(mode_s, NULL, 8) & 07777;
    struct timespec times[2] = {{strtoll(sec_s, NULL, 10), strtol(nsec_s, NULL, 10)}, {0, 0}};
    times[1] = times[0];
    uint64_t size = strtoull(size_s, NULL, 10);
    char full[FS_MAX_NAME];
    snprintf(full, sizeof full, "%s", name);
    char *last = split_last(name);
    int pfd = walk(root, last == name ? "." : name, 1);
    if (type[0] == 'd') {
      struct stat st;
      if (fstatat(pfd, last, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) clear_slot(pfd, last, full);
      /* Owner-writable until the end, when the archive's mode (maybe read-only) is applied. */
      if (mkdirat(pfd, last, 0700) != 0 && errno != EEXIST) fs_fail(errno, full);
      struct dir_meta *grown = realloc(dirs, (ndirs + 1) * sizeof *dirs);
      if (!grown) fs_fail(ENOMEM, full);
      dirs = grown;
      dirs[ndirs++] = (struct dir_meta){strdup(full), mode, {times[0], times[1]}};
    } else if (type[0] == 'f') {
      clear_slot(pfd, last, full);
      int fd = openat(pfd, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0) fs_fail(errno, full);
      rd_copy(&r, size, fd, full);
      if (fchmod(fd, mode) != 0 || futimens(fd, times) != 0 || close(fd) != 0) fs_fail(errno, full);
    } else if (type[0] == 'l') {
      clear_slot(pfd, last, full);
      if (symlinkat(link, pfd, last) != 0) fs_fail(errno, full);
      utimensat(pfd, last, times, AT_SYMLINK_NOFOLLOW);
    } else if (type[0] == 'h') {
      check_name(link);
      char target[FS_MAX_NAME];
      snprintf(target, sizeof target, "%s", link);
      char *tlast = split_last(target);
      int tfd = walk(root, tlast == target ? "." : target, 0);
      clear_slot(pfd, last, full);
      if (linkat(tfd, tlast, pfd, last, 0) != 0) fs_fail(errno, full);
      close(tfd);
    } else {
      rd_copy(&r, size, -1, full);
    }
    close(pfd);
  }
  /* Deepest last in the stream, so applied first: a read-only parent is made so after its children. */
  while (ndirs > 0) {
    struct dir_meta *d = &dirs[--ndirs];
    int fd = walk(root, d->name, 0);
    if (fchmod(fd, d->mode) != 0 || futimens(fd, d->times) != 0) fs_fail(errno, d->name);
    close(fd);
    free(d->name);
  }
  free(dirs);
  close(root);
  return 0;
}
