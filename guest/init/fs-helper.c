/*
 * `prism-init fs OP ARGS...`: the file operations of the files API (docs/api.md, "Files").
 *
 * The daemon runs this through the task's ordinary exec path (`/.prism/init fs ...`, see
 * TASK_INIT_PATH in src/runtime/driver.ts), so it runs in the sandbox's own mount namespace and root,
 * as the sandbox's user unless asked for root. Every path, and every symlink met on the way, is
 * resolved by the kernel against the sandbox's "/": no path of the host is ever named, so no link can
 * lead outside the sandbox (docs/security.md, "Files"). The daemon never opens a sandbox's files itself.
 *
 *   read PATH MAX        file bytes on stdout (EFBIG past MAX bytes)
 *   write PATH MODE|-    stdin: frames u32 big-endian length + bytes, length 0 = end; written to a
 *                        temp file renamed over PATH only after the end frame, so an upload cut short
 *                        changes nothing and leaves nothing. Parents are created (0755).
 *   stat PATH            one record (links followed)      list PATH   one record per entry (not followed)
 *   mkdir PATH MODE 0|1  (1: parents too, an existing directory is fine)
 *   remove PATH 0|1      (1: recursive; links are removed, never followed)
 *   move FROM TO         rename(2)
 *   archive-out PATH     records + file bytes (fs-archive.c)   archive-in DIR   the reverse
 *   watch DIR 0|1        change events as lines until DIR goes (fs-watch.c; 1: subdirectories too)
 *
 * A record is 7 NUL-terminated fields: type (f d l o, h for a hard link), mode (octal), mtime seconds,
 * mtime nanoseconds, size, name, link target. Failures: exit 1 with "<ERRNAME> message" on stderr.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs-helper.h"
#include "prism-init.h"

static const struct {
  int err;
  const char *name;
} ERRNAMES[] = {
    {ENOENT, "ENOENT"}, {ENOTDIR, "ENOTDIR"}, {EISDIR, "EISDIR"}, {EACCES, "EACCES"}, {EPERM, "EPERM"},
    {ENOSPC, "ENOSPC"}, {EDQUOT, "EDQUOT"}, {EFBIG, "EFBIG"}, {EEXIST, "EEXIST"}, {ENOTEMPTY, "ENOTEMPTY"},
    {EXDEV, "EXDEV"}, {ELOOP, "ELOOP"}, {EROFS, "EROFS"}, {ENAMETOOLONG, "ENAMETOOLONG"}, {EINVAL, "EINVAL"},
    {EBUSY, "EBUSY"}, {EPIPE, "EPIPE"}, {ETXTBSY, "ETXTBSY"},
};

/* The upload's temp file while it is being written: removed on any failure. */
static char upload_tmp[FS_MAX_NAME + 32];

/*
 * Reads stdin to its end before exiting. The exec agent ends the connection once this process has
 * exited; a daemon still writing upload bytes then would hit a closed socket, and Node drops a socket
 * on EPIPE before reading the exit frame waiting in it. So the daemon always closes stdin first: on
 * success after the end frame, on failure as soon as it sees the error on stderr.
 */
static void drain_stdin(void) {
  static char sink[1 << 16];
  ssize_t n;
  while ((n = read(0, sink, sizeof sink)) > 0 || (n < 0 && errno == EINTR)) {
  }
}

_Noreturn void fs_fail(int err, const char *what) {
  const char *name = "EIO";
  for (size_t i = 0; i < sizeof ERRNAMES / sizeof ERRNAMES[0]; i++)
    if (ERRNAMES[i].err == err) name = ERRNAMES[i].name;
  fflush(stdout);
  fprintf(stderr, "%s %s: %s\n", name, what, strerror(err));
  fflush(stderr);
  if (upload_tmp[0]) unlink(upload_tmp); /* before the drain: the daemon may be gone for good */
  upload_tmp[0] = 0;
  drain_stdin();
  exit(1);
}

static int fill(struct reader *r) {
  if (r->pos < r->len) return 1;
  ssize_t n;
  do n = read(0, r->buf, sizeof r->buf);
  while (n < 0 && errno == EINTR);
  if (n < 0) fs_fail(errno, "read stdin");
  r->pos = 0;
  r->len = (size_t)n;
  return n > 0;
}

int rd_field(struct reader *r, char *out, size_t cap) {
  size_t n = 0;
  for (;;) {
    if (!fill(r)) {
      if (n == 0) return -1;
      fs_fail(EPIPE, "the record stream ended inside a field");
    }
    char c = (char)r->buf[r->pos++];
    if (c == 0) break;
    if (n + 1 >= cap) fs_fail(ENAMETOOLONG, "a record field");
    out[n++] = c;
  }
  out[n] = 0;
  return 0;
}

/* write_all, or the file operation fails with the write's error. */
static void write_or_fail(int fd, const void *buf, size_t n, const char *what) {
  if (write_all(fd, buf, n) < 0) fs_fail(errno, what);
}

void rd_copy(struct reader *r, uint64_t n, int fd, const char *what) {
  while (n > 0) {
    if (!fill(r)) fs_fail(EPIPE, "the upload ended early");
    size_t k = r->len - r->pos;
    if (k > n) k = (size_t)n;
    if (fd >= 0) write_or_fail(fd, r->buf + r->pos, k, what);
    r->pos += k;
    n -= k;
  }
}

char type_of(mode_t m) {
  return S_ISREG(m) ? 'f' : S_ISDIR(m) ? 'd' : S_ISLNK(m) ? 'l' : 'o';
}

void put_record(char type, const struct stat *st, const char *name, const char *link) {
  printf("%c%c%o%c%lld%c%ld%c%lld%c%s%c%s%c", type, 0, (unsigned)(st->st_mode & 07777), 0, (long long)st->st_mtim.tv_sec, 0,
         st->st_mtim.tv_nsec, 0, (long long)st->st_size, 0, name, 0, link, 0);
  if (ferror(stdout)) fs_fail(EPIPE, "write stdout");
}

void make_parents(const char *path, int last, mode_t mode) {
  char p[FS_MAX_NAME];
  if (strlen(path) >= sizeof p) fs_fail(ENAMETOOLONG, path);
  strcpy(p, path);
  size_t end = strlen(p);
  while (end > 1 && p[end - 1] == '/') p[--end] = 0;
  for (char *s = p + 1;; s++) {
    int at_end = *s == 0;
    if (!at_end && *s != '/') continue;
    if (at_end && !last) break;
    *s = 0;
    struct stat st;
    if (mkdir(p, at_end ? mode : 0755) != 0 && (errno != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode)))
      fs_fail(errno == EEXIST ? ENOTDIR : errno, p);
    if (at_end) break;
    *s = '/';
  }
}

static int fs_read(const char *path, unsigned long long max) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) fs_fail(errno, path);
  if (S_ISDIR(st.st_mode)) fs_fail(EISDIR, path);
  /* A FIFO or device could block or never end: only regular files are read. */
  if (!S_ISREG(st.st_mode)) fs_fail(EINVAL, path);
  if ((unsigned long long)st.st_size > max) fs_fail(EFBIG, path);
  fcntl(fd, F_SETFL, 0);
  static char buf[1 << 17];
  unsigned long long total = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fs_fail(errno, path);
    if (n == 0) return 0;
    if ((total += (unsigned long long)n) > max) fs_fail(EFBIG, path); /* it grew while being read */
    write_or_fail(1, buf, (size_t)n, "write stdout");
  }
}

static uint32_t rd_u32(struct reader *r, int *eof) {
  unsigned char b[4];
  for (int i = 0; i < 4; i++) {
    if (!fill(r)) {
      *eof = 1;
      return 0;
    }
    b[i] = r->buf[r->pos++];
  }
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int fs_write(const char *path, const char *mode_arg) {
  make_parents(path, 0, 0755);
  /* Writing through a link writes its target (inside the sandbox: resolved against its root). */
  char target[FS_MAX_NAME];
  struct stat st;
  int exists = stat(path, &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) fs_fail(EISDIR, path);
  if (exists && !realpath(path, target)) fs_fail(errno, path);
  if (!exists) {
    if (strlen(path) >= sizeof target) fs_fail(ENAMETOOLONG, path);
    strcpy(target, path);
  }
  mode_t mode = strcmp(mode_arg, "-") == 0 ? (exists ? st.st_mode & 07777 : 0644) : (mode_t)strtoul(mode_arg, NULL, 8) & 07777;
  char dir[FS_MAX_NAME];
  strcpy(dir, target);
  snprintf(upload_tmp, sizeof upload_tmp, "%s/.prism-upload-XXXXXX", dirname(dir));
  int fd = mkostemp(upload_tmp, O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    upload_tmp[0] = 0;
    fs_fail(e, path);
  }
  static struct reader r;
  for (;;) {
    int eof = 0;
    uint32_t n = rd_u32(&r, &eof);
    if (eof) fs_fail(EPIPE, "the upload ended early"); /* the daemon's client went away: keep the old file */
    if (n == 0) break;
    rd_copy(&r, n, fd, path);
  }
  if (fchmod(fd, mode) != 0 || close(fd) != 0) fs_fail(errno, path);
  if (rename(upload_tmp, target) != 0) fs_fail(errno, path);
  upload_tmp[0] = 0;
  return 0;
}

static int fs_stat(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) fs_fail(errno, path);
  char copy[FS_MAX_NAME];
  snprintf(copy, sizeof copy, "%s", path);
  put_record(type_of(st.st_mode), &st, basename(copy), "");
  return 0;
}

static int fs_list(const char *path) {
  DIR *d = opendir(path);
  if (!d) fs_fail(errno, path);
  struct dirent *e;
  char link[FS_MAX_NAME];
  errno = 0;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    struct stat st;
    /* Gone between readdir and stat: not an entry any more. */
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    link[0] = 0;
    if (S_ISLNK(st.st_mode)) {
      ssize_t n = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
      link[n > 0 ? n : 0] = 0;
    }
    put_record(type_of(st.st_mode), &st, e->d_name, link);
    errno = 0;
  }
  if (errno) fs_fail(errno, path);
  closedir(d);
  return 0;
}

static int remove_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  if ((flag == FTW_DP ? rmdir(p) : unlink(p)) != 0) fs_fail(errno, p);
  return 0;
}

static int fs_remove(const char *path, int recursive) {
  struct stat st;
  if (lstat(path, &st) != 0) fs_fail(errno, path);
  if (!S_ISDIR(st.st_mode)) {
    if (unlink(path) != 0) fs_fail(errno, path);
    return 0;
  }
  if (!recursive) {
    if (rmdir(path) != 0) fs_fail(errno, path);
    return 0;
  }
  if (nftw(path, remove_one, 32, FTW_DEPTH | FTW_PHYS) != 0) fs_fail(errno, path);
  return 0;
}

int fs_main(int argc, char **argv) {
  umask(0); /* modes are exact, as asked for, not filtered by the exec agent's umask */
  static char outbuf[1 << 16];
  setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
  const char *op = argc > 2 ? argv[2] : "";
  int rc = -1;
  if (argc == 5 && strcmp(op, "read") == 0) rc = fs_read(argv[3], strtoull(argv[4], NULL, 10));
  else if (argc == 5 && strcmp(op, "write") == 0) rc = fs_write(argv[3], argv[4]);
  else if (argc == 4 && strcmp(op, "stat") == 0) rc = fs_stat(argv[3]);
  else if (argc == 4 && strcmp(op, "list") == 0) rc = fs_list(argv[3]);
  else if (argc == 6 && strcmp(op, "mkdir") == 0) {
    mode_t mode = (mode_t)strtoul(argv[4], NULL, 8) & 07777;
    if (strcmp(argv[5], "1") == 0) make_parents(argv[3], 1, mode);
    else if (mkdir(argv[3], mode) != 0) fs_fail(errno, argv[3]);
    rc = 0;
  } else if (argc == 5 && strcmp(op, "remove") == 0) rc = fs_remove(argv[3], strcmp(argv[4], "1") == 0);
  else if (argc == 5 && strcmp(op, "move") == 0) {
    if (rename(argv[3], argv[4]) != 0) fs_fail(errno, argv[3]);
    rc = 0;
  } else if (argc == 4 && strcmp(op, "archive-out") == 0) rc = fs_archive_out(argv[3]);
  else if (argc == 4 && strcmp(op, "archive-in") == 0) rc = fs_archive_in(argv[3]);
  else if (argc == 5 && strcmp(op, "watch") == 0) rc = fs_watch(argv[3], strcmp(argv[4], "1") == 0);
  if (rc < 0) {
    fprintf(stderr, "EINVAL usage: prism-init fs read|write|stat|list|mkdir|remove|move|archive-out|archive-in|watch ARGS\n");
    return 2;
  }
  if (fflush(stdout) != 0) fs_fail(errno, "write stdout");
  drain_stdin();
  return rc;
}
