#define _GNU_SOURCE
#include <ftw.h>

#include "prism-init.h"

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

int layer_fixup(const char *dest) {
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

/*
 * The reverse, for snapshots: `prism-init layer-scan SRC` reports what Node cannot see in an overlay
 * upper directory (it has no getxattr): every opaque directory (trusted.overlay.opaque=y), as records
 * of NUL-terminated fields on stdout, paths relative to SRC:
 *   "o" REL              ("" is SRC itself)
 * Whiteouts (character devices 0:0) Node sees with lstat. The walk never follows a symlink.
 * Exit status: 0 done, 1 a system call failed (message on stderr).
 */
static int scan_status;
static size_t scan_root_len;

static int scan_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  if (type != FTW_D) return 0;
  char v[2];
  ssize_t n = lgetxattr(path, "trusted.overlay.opaque", v, sizeof v);
  if (n == 1 && v[0] == 'y') {
    const char *rel = path + scan_root_len;
    if (*rel == '/') rel++;
    fputs("o", stdout);
    fputc(0, stdout);
    fputs(rel, stdout);
    fputc(0, stdout);
  } else if (n < 0 && errno != ENODATA && errno != ENOTSUP) {
    fprintf(stderr, "prism-init layer-scan: %s: %s\n", path, strerror(errno));
    scan_status = 1;
  }
  return 0;
}

int layer_scan(const char *src) {
  scan_root_len = strlen(src);
  if (nftw(src, scan_one, 64, FTW_PHYS) != 0) {
    fprintf(stderr, "prism-init layer-scan: %s: %s\n", src, strerror(errno));
    return 1;
  }
  return fflush(stdout) == 0 ? scan_status : 1;
}
