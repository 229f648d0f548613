#define _GNU_SOURCE
#include "prism-init.h"
#if __has_include(<linux/loop.h>)
#include <linux/loop.h>
#define HAVE_LOOP 1
#endif

/*
 * Host mounts for the daemon, as direct system calls instead of mount(8) and umount(8).
 *
 * `prism-init mount-loop IMAGE TARGET`: attaches IMAGE to a free loop device and mounts it as ext4 at
 * TARGET (nosuid,nodev,noatime). For an image file made just now only: mount(8) -o loop first scans
 * every loop device of the host for one that already backs the file (so that two mounts share one
 * file system), which costs 20 ms with 1600 loop devices and grows with them; a new file has none.
 * The device is attached with autoclear, so it is released with the file system's last unmount.
 * Exit 3: this host cannot do it this way (no loop-control, no LOOP_CONFIGURE before Linux 5.8, no
 * device node): the daemon falls back to mount(8).
 *
 * `prism-init umount PREFIX...`: unmounts everything at or below each PREFIX, the prefixes in the
 * order given (a caller puts what holds another busy first), deepest first within one; a busy mount
 * is detached lazily (MNT_DETACH). Reads the mount table itself, once before and once after: it
 * grows with every task of the host, and parsing it here costs far less than in the daemon. Exit 1,
 * naming them, when mounts are left.
 */

#define NO_FAST_PATH 3

#ifndef HAVE_LOOP
/* Built without kernel headers (the musl build for the microVM guest, which mounts nothing this way). */
int mount_loop(const char *image, const char *target) {
  fprintf(stderr, "this build of prism-init cannot attach %s for %s\n", image, target);
  return NO_FAST_PATH;
}
#else
int mount_loop(const char *image, const char *target) {
  int file = open(image, O_RDWR | O_CLOEXEC);
  if (file < 0) {
    fprintf(stderr, "cannot open %s: %s\n", image, strerror(errno));
    return 1;
  }
  int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) {
    fprintf(stderr, "cannot open /dev/loop-control: %s\n", strerror(errno));
    close(file);
    return NO_FAST_PATH;
  }
  int dev = -1, n = -1;
  /* Another attach (ours or mount(8)'s) can take the free device between asking and configuring. */
  for (int attempt = 0; attempt < 64 && dev < 0; attempt++) {
    n = ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      fprintf(stderr, "no free loop device: %s\n", strerror(errno));
      close(ctl);
      close(file);
      return 1;
    }
    char path[32];
    snprintf(path, sizeof path, "/dev/loop%d", n);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
      close(ctl);
      close(file);
      return NO_FAST_PATH;
    }
    struct loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.fd = (unsigned)file;
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    strncpy((char *)cfg.info.lo_file_name, image, LO_NAME_SIZE - 1);
    if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
      dev = fd;
      break;
    }
    int err = errno;
    close(fd);
    if (err == EBUSY) continue;
    fprintf(stderr, "cannot attach %s to %s: %s\n", image, path, strerror(err));
    close(ctl);
    close(file);
    return err == EINVAL || err == ENOTTY ? NO_FAST_PATH : 1;
  }
  close(ctl);
  close(file);
  if (dev < 0) {
    fprintf(stderr, "no loop device stayed free for %s\n", image);
    return 1;
  }
  char path[32];
  snprintf(path, sizeof path, "/dev/loop%d", n);
  if (mount(path, target, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, NULL) != 0) {
    fprintf(stderr, "cannot mount %s (%s) on %s: %s\n", image, path, target, strerror(errno));
    ioctl(dev, LOOP_CLR_FD, 0);
    close(dev);
    return 1;
  }
  close(dev); /* the mount holds the device now; autoclear releases it with the last unmount */
  return 0;
}
#endif

/* mountinfo escapes space, tab, newline and backslash as \ooo: decoded in place. */
static void unescape(char *s) {
  char *w = s;
  for (char *r = s; *r;) {
    if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
      *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
      r += 4;
    } else {
      *w++ = *r++;
    }
  }
  *w = 0;
}

/* Mount points of this process's mount table, one entry per mount (a path mounted over twice is listed twice). */
static size_t read_table(char ***out) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  size_t n = 0, cap = 0;
  char **points = NULL;
  char *line = NULL;
  size_t len = 0;
  while (f && getline(&line, &len, f) > 0) {
    char *field = line, *save = NULL;
    for (int i = 0; i < 5 && field; i++) field = strtok_r(i == 0 ? line : NULL, " ", &save);
    if (!field) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      char **grown = realloc(points, cap * sizeof *points);
      if (!grown) break;
      points = grown;
    }
    unescape(field);
    points[n++] = strdup(field);
  }
  free(line);
  if (f) fclose(f);
  *out = points;
  return n;
}

static int is_under(const char *path, const char *prefix) {
  size_t l = strlen(prefix);
  while (l > 1 && prefix[l - 1] == '/') l--;
  return strncmp(path, prefix, l) == 0 && (path[l] == 0 || path[l] == '/');
}

static int deeper_first(const void *a, const void *b) {
  size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
  return la < lb ? 1 : la > lb ? -1 : 0;
}

static void free_table(char **t, size_t n) {
  for (size_t i = 0; i < n; i++) free(t[i]);
  free(t);
}

int unmount_under(int count, char **prefixes) {
  char **table;
  size_t n = read_table(&table);
  char **order = calloc(n + 1, sizeof *order);
  char *taken = calloc(n + 1, 1);
  size_t m = 0;
  if (!order || !taken) return 1;
  /* Each prefix's mounts in the order the prefixes are given, deepest first within one. */
  for (int p = 0; p < count; p++) {
    size_t start = m;
    for (size_t i = n; i-- > 0;) /* later mounts first: one mounted over another comes off first */
      if (!taken[i] && is_under(table[i], prefixes[p])) {
        taken[i] = 1;
        order[m++] = table[i];
      }
    qsort(order + start, m - start, sizeof *order, deeper_first);
  }
  for (size_t i = 0; i < m; i++) {
    if (umount2(order[i], UMOUNT_NOFOLLOW) == 0) continue;
    if (errno == EINVAL || errno == ENOENT) continue; /* not (or no longer) a mount point */
    if (errno == EBUSY && umount2(order[i], MNT_DETACH | UMOUNT_NOFOLLOW) == 0) continue;
    fprintf(stderr, "cannot unmount %s: %s\n", order[i], strerror(errno));
  }
  free(order);
  free(taken);
  free_table(table, n);
  /* Whatever is still there (a mount that would not go, or one made meanwhile) is an error to report. */
  n = read_table(&table);
  int left = 0;
  for (size_t i = 0; i < n; i++)
    for (int p = 0; p < count; p++)
      if (is_under(table[i], prefixes[p])) {
        fprintf(stderr, "%s%s", left++ ? ", " : "still mounted: ", table[i]);
        break;
      }
  if (left) fputc('\n', stderr);
  free_table(table, n);
  return left ? 1 : 0;
}
