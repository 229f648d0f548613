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
 * `prism-init umount PATH...`: unmounts each PATH in the order given (the caller puts the deepest
 * first); a busy one is detached lazily (MNT_DETACH), one already gone is skipped. Exit 1 if any
 * could not be unmounted at all.
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

int unmount_all(int count, char **paths) {
  int failed = 0;
  for (int i = 0; i < count; i++) {
    if (umount2(paths[i], UMOUNT_NOFOLLOW) == 0) continue;
    if (errno == EINVAL || errno == ENOENT) continue; /* not (or no longer) a mount point */
    if (errno == EBUSY && umount2(paths[i], MNT_DETACH | UMOUNT_NOFOLLOW) == 0) continue;
    fprintf(stderr, "cannot unmount %s: %s\n", paths[i], strerror(errno));
    failed = 1;
  }
  return failed;
}
