/*
 * prism-agent: /init (PID 1) of every microVM, started by the kernel from the initramfs.
 *
 * Boot: mount proc, sysfs and devtmpfs, load the initramfs's modules (virtio drivers), find the
 * virtio-serial port `prism.agent` (QEMU) or, without one, listen on vsock port 1024 (Firecracker,
 * which has no virtio-serial) and serve the host (agent.c). `M` later mounts the sandbox's disks
 * as an overlay and switches into it; `V` mounts a volume disk in it; `Q` powers off. PID 1 must never exit (the kernel panics), so
 * every failure here is logged to the console and the agent carries on serving, or powers off.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define PORT_NAME "prism.agent"
#define VIRTIO_ID_CONSOLE 3 /* linux/virtio_ids.h */
#define MODULE_INIT_COMPRESSED_FILE 4 /* linux/module.h, kernel 6.0+: the kernel decompresses */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* Calls f until it succeeds (>= 0) or `ms` pass: devices appear asynchronously after probing. */
static int retry_ms(int (*f)(void), long ms) {
  int r;
  for (long waited = 0; (r = f()) < 0 && waited < ms; waited += 20) sleep_ms(20);
  return r;
}

static void mount_early(void) {
  mkdir("/proc", 0555);
  mkdir("/sys", 0555);
  mkdir("/dev", 0755);
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) agent_log("mount /proc: %m");
  if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) agent_log("mount /sys: %m");
  /* CONFIG_DEVTMPFS_MOUNT does not apply to an initramfs root: mount it ourselves. */
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") != 0 && errno != EBUSY) agent_log("mount /dev: %m");
  /* The kernel opens /dev/console as fds 0-2 only if the initramfs had one; ours has an empty /dev. */
  int fd = open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd < 0) fd = open("/dev/null", O_RDWR);
  for (int i = 0; fd >= 0 && i < 3; i++)
    if (fd != i) dup2(fd, i);
  if (fd > 2) close(fd);
}

static void load_modules(void) {
  FILE *f = fopen("/modules.order", "re");
  char line[256], path[300];
  while (f && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    if (!line[0] || line[0] == '#') continue;
    snprintf(path, sizeof path, line[0] == '/' ? "%s" : "/lib/modules/%s", line);
    const char *dot = strrchr(line, '.');
    int flags = dot && strcmp(dot, ".ko") != 0 ? MODULE_INIT_COMPRESSED_FILE : 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (syscall(SYS_finit_module, fd, "", flags) != 0 && errno != EEXIST)) agent_log("load %s: %m", path);
    if (fd >= 0) close(fd);
  }
  if (f) fclose(f);
}

/* Opens /dev/vportNpM whose /sys/class/virtio-ports/vportNpM/name is PORT_NAME; -1 if none yet. */
static int port_open(void) {
  DIR *d = opendir("/sys/class/virtio-ports");
  struct dirent *e;
  int fd = -1;
  while (d && fd < 0 && (e = readdir(d))) {
    char path[300], name[64] = "";
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
    int nfd = e->d_name[0] == '.' ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (nfd < 0) continue;
    ssize_t n = read(nfd, name, sizeof name - 1);
    close(nfd);
    name[n > 0 ? n : 0] = 0;
    name[strcspn(name, "\n")] = 0;
    snprintf(path, sizeof path, "/dev/%s", e->d_name);
    if (strcmp(name, PORT_NAME) == 0) fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  }
  /*
   * SIGIO when the host connects or leaves (virtio_console signals VIRTIO_CONSOLE_PORT_OPEN to async
   * owners); agent.c takes it through its signalfd, so a host reconnecting (after a restore from a
   * template, or a prismd restart) is answered at once, not at the next 100 ms re-check.
   */
  if (fd >= 0 && (fcntl(fd, F_SETOWN, getpid()) != 0 || fcntl(fd, F_SETFL, O_RDWR | O_NONBLOCK | O_ASYNC) != 0))
    agent_log("cannot ask for SIGIO on the port: %m (reconnects are seen within 100 ms)");
  if (d) closedir(d);
  return fd;
}

static int vport = -1;

/*
 * The vsock fallback. musl ships no <linux/vm_sockets.h>: this is the kernel's struct sockaddr_vm
 * (16 bytes, like struct sockaddr) and VMADDR_CID_ANY from it.
 */
#define VSOCK_PORT 1024
#define VSOCK_CID_ANY 0xffffffffu
struct vsock_addr {
  sa_family_t svm_family;
  unsigned short svm_reserved1;
  unsigned int svm_port;
  unsigned int svm_cid;
  unsigned char svm_flags;
  unsigned char svm_zero[3];
};
_Static_assert(sizeof(struct vsock_addr) == sizeof(struct sockaddr), "sockaddr_vm layout");

static int vsock_listener = -1;

/* A non-blocking listener on VSOCK_PORT for any CID; -1 without vsock (module or device missing). */
static int vsock_listen(void) {
  int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct vsock_addr addr = {.svm_family = AF_VSOCK, .svm_port = VSOCK_PORT, .svm_cid = VSOCK_CID_ANY};
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s, 4) != 0) {
    close(s);
    return -1;
  }
  return s;
}

/*
 * The virtio port comes first and stays open across host reconnects: it reports POLLHUP (and reads
 * return 0) while no host is attached to its chardev, and stops as soon as one is. Without it, each
 * host connection is its own vsock socket: the previous one is closed and the next one accepted. The
 * listener survives a Firecracker snapshot/restore, which resets the connections that were open.
 */
int port_reconnect(int previous) {
  if (vport < 0) vport = port_open();
  if (previous >= 0 && previous != vport) close(previous);
  if (vport >= 0) {
    struct pollfd p = {vport, POLLIN, 0};
    return poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP) ? vport : -1;
  }
  if (vsock_listener < 0 && (vsock_listener = vsock_listen()) < 0) return -1;
  return accept4(vsock_listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

/* Whether a virtio device with this id was probed (the drivers are loaded, so probing is done). */
static int virtio_device_present(unsigned id) {
  DIR *d = opendir("/sys/bus/virtio/devices");
  struct dirent *e;
  int found = 0;
  while (d && !found && (e = readdir(d))) {
    char path[300], val[16] = "";
    snprintf(path, sizeof path, "/sys/bus/virtio/devices/%s/device", e->d_name);
    int fd = e->d_name[0] == '.' ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = read(fd, val, sizeof val - 1);
    close(fd);
    val[n > 0 ? n : 0] = 0;
    found = strtoul(val, NULL, 16) == id;
  }
  if (d) closedir(d);
  return found;
}

#define VIRTIO_ID_BLOCK 2

static int image_disk_present(void) {
  struct stat st;
  return stat("/dev/vda", &st) == 0 ? 0 : -1;
}

static int disks_present(void) {
  struct stat st;
  return stat("/dev/vda", &st) == 0 && stat("/dev/vdb", &st) == 0 ? 0 : -1;
}

#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* The image disk on /lower: mounted at boot when present (see prepare_shared), else by `M`. */
static int lower_mounted;

/* The overlay of the image disk (vda, read-only) and the sandbox's writable disk (vdb). */
static int mount_overlay(char *err, size_t errlen) {
  if (retry_ms(disks_present, 5000) < 0) return FAIL("/dev/vda or /dev/vdb missing after 5 s");
  if (!lower_mounted && mount("/dev/vda", "/lower", "ext4", MS_RDONLY, NULL) != 0) return FAIL("mount /dev/vda on /lower: %m");
  lower_mounted = 1;
  const char *step = NULL;
  if (mount("/dev/vdb", "/upper", "ext4", 0, NULL) != 0) step = "mount /dev/vdb on /upper";
  else if ((mkdir("/upper/upper", 0755) != 0 && errno != EEXIST) || (mkdir("/upper/work", 0755) != 0 && errno != EEXIST))
    step = "create /upper/upper and /upper/work";
  else if (mount("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/upper/upper,workdir=/upper/work") != 0)
    step = "mount overlay on /newroot";
  else return 0;
  snprintf(err, errlen, "%s: %s", step, strerror(errno));
  /* Undo, so that a later M can try again (the image disk stays mounted: it is read-only). */
  umount2("/upper", MNT_DETACH);
  return -1;
}

static int write_str(const char *path, const char *value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, value, strlen(value));
  close(fd);
  return n == (ssize_t)strlen(value) ? 0 : -1;
}

/* The guest has no network device, but programs expect a working loopback (as in a container). */
static int loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    rc = ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  close(s);
  return rc;
}

#define SANDBOX_CG "/sys/fs/cgroup/sandbox"
static int cgroup_ready, cgroup_created;
static int oom_events_fd = -1; /* kept open: read once per exec */

/*
 * The sandbox's limits hold inside the guest too: guest RAM is the limit plus room for the kernel and
 * the agent, so the commands themselves are capped by a cgroup (v2) that every command joins.
 */
/* The sandbox cgroup without its limits; done at boot (see prepare_shared), else by `M`. */
static int cgroup_create(char *err, size_t errlen) {
  if (cgroup_created) return 0;
  if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 && errno != EBUSY)
    return FAIL("mount cgroup2: %m");
  if (write_str("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids") != 0) return FAIL("enable memory and pids controllers: %m");
  if (mkdir(SANDBOX_CG, 0755) != 0 && errno != EEXIST) return FAIL("mkdir " SANDBOX_CG ": %m");
  cgroup_created = 1;
  return 0;
}

static int sandbox_cgroup(const struct limits *lim, char *err, size_t errlen) {
  char v[32];
  if (cgroup_create(err, errlen) < 0) return -1;
  if (lim->memory_bytes) {
    snprintf(v, sizeof v, "%llu", lim->memory_bytes);
    if (write_str(SANDBOX_CG "/memory.max", v) != 0) return FAIL("memory.max: %m");
    write_str(SANDBOX_CG "/memory.swap.max", "0"); /* absent without swap support: fine */
  }
  /*
   * Overcommit as a container host does: an allocation larger than the guest's RAM then succeeds and
   * the cgroup's OOM killer ends the command when it touches too much, instead of malloc failing.
   */
  write_str("/proc/sys/vm/overcommit_memory", "1");
  if (lim->pids) {
    snprintf(v, sizeof v, "%llu", lim->pids);
    if (write_str(SANDBOX_CG "/pids.max", v) != 0) return FAIL("pids.max: %m");
  }
  /*
   * The agent joins the sandbox cgroup itself, as a container's init is in its container's: every
   * command inherits it at fork, which costs nothing, where moving each child in cost a cgroup
   * migration per exec. PID 1 is never chosen by the OOM killer; its output buffers count against
   * the sandbox's memory, as the commands' own pipes would.
   */
  if (write_str(SANDBOX_CG "/cgroup.procs", "0") != 0) return FAIL("join " SANDBOX_CG ": %m");
  oom_events_fd = open(SANDBOX_CG "/memory.events", O_RDONLY | O_CLOEXEC);
  cgroup_ready = 1;
  return 0;
}


static unsigned long long read_counter(const char *path, const char *key) {
  char buf[1024];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  if (!key) return strtoull(buf, NULL, 10);
  for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    size_t k = strlen(key);
    if (strncmp(line, key, k) == 0 && line[k] == ' ') return strtoull(line + k + 1, NULL, 10);
  }
  return 0;
}

/* The oom_kill line of memory.events, re-read through the kept descriptor (pread from 0 regenerates it). */
unsigned long long sandbox_oom_kills(void) {
  char buf[512];
  ssize_t n = oom_events_fd >= 0 ? pread(oom_events_fd, buf, sizeof buf - 1, 0) : -1;
  if (n <= 0) return 0;
  buf[n] = 0;
  char *line = strstr(buf, "oom_kill ");
  return line ? strtoull(line + 9, NULL, 10) : 0;
}

/* The root is the overlay once mounted: its statvfs is the upper layer's, the VM's writable disk. */
void sandbox_stats(char *out, size_t n) {
  struct statvfs fs;
  unsigned long long disk_used = 0, disk_total = 0;
  if (statvfs("/", &fs) == 0) {
    disk_total = (unsigned long long)fs.f_blocks * fs.f_frsize;
    disk_used = (unsigned long long)(fs.f_blocks - fs.f_bfree) * fs.f_frsize;
  }
  snprintf(out, n, "pids %llu memory %llu oom_kills %llu mem_cache %llu disk_used %llu disk_total %llu",
           read_counter(SANDBOX_CG "/pids.current", NULL), read_counter(SANDBOX_CG "/memory.current", NULL),
           read_counter(SANDBOX_CG "/memory.events", "oom_kill"), read_counter(SANDBOX_CG "/memory.stat", "file"), disk_used,
           disk_total);
}

/* RNDRESEEDCRNG (linux/random.h, absent from musl): reseed the kernel's CRNG from the input pool now. */
#define PRISM_RNDRESEEDCRNG _IO('R', 0x07)

/*
 * The host's clock and entropy. A VM restored from a snapshot wakes with the template's wall clock
 * and RNG state, shared by every VM restored from it; fresh bytes mixed in and a forced reseed make
 * each one's random numbers its own.
 */
void host_refresh(const struct limits *lim) {
  if (lim->time_ms) {
    struct timespec ts = {(time_t)(lim->time_ms / 1000), (long)(lim->time_ms % 1000) * 1000000L};
    if (clock_settime(CLOCK_REALTIME, &ts) != 0) agent_log("cannot set the clock: %m");
  }
  if (lim->seed_len) {
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, lim->seed, lim->seed_len) != (ssize_t)lim->seed_len || ioctl(fd, PRISM_RNDRESEEDCRNG) != 0)
      agent_log("cannot reseed the RNG: %m");
    if (fd >= 0) close(fd);
  }
}

/*
 * What every sandbox of this VM shape shares, done before the `booted` hello so that it is in a
 * template snapshot and a restored VM skips it (under TCG each first run of a kernel path costs
 * translation time): the image disk mounted read-only on /lower (a template is keyed by that disk
 * file, which never changes) and the cgroup2 hierarchy with an empty sandbox cgroup. The per-sandbox
 * parts (writable disk, limits, hostname) wait for `M`. Failures are left for `M` to retry and report.
 */
static void prepare_shared(void) {
  char err[160];
  if (virtio_device_present(VIRTIO_ID_BLOCK) && retry_ms(image_disk_present, 2000) == 0) {
    if (mount("/dev/vda", "/lower", "ext4", MS_RDONLY, NULL) == 0) lower_mounted = 1;
    else agent_log("mount /dev/vda on /lower: %m (M tries again)");
  }
  if (cgroup_create(err, sizeof err) < 0) agent_log("%s (M tries again)", err);
}

/*
 * prism-init (its musl build, shipped in the initramfs by scripts/prepare-guest.sh) at /.prism/init of the sandbox,
 * read-only, where oci and docker tasks have it too: the daemon's file operations run it inside the
 * sandbox's root (TASK_INIT_PATH in src/runtime/driver.ts). The mount point is made with O_NOFOLLOW
 * and mounted through its descriptor, so an image's /.prism symlink cannot aim the mount elsewhere.
 * Missing from an older initramfs: only file operations are lost, so it is logged, not fatal.
 */
static void mount_init_binary(void) {
  struct stat st;
  if (stat("/prism-init", &st) != 0) {
    agent_log("no /prism-init in the initramfs: file operations will fail");
    return;
  }
  int root = open("/newroot", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root >= 0 && mkdirat(root, ".prism", 0755) != 0 && errno != EEXIST) agent_log("mkdir /.prism: %m");
  int dir = root >= 0 ? openat(root, ".prism", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
  int f = dir >= 0 ? openat(dir, "init", O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0755) : -1;
  char target[64];
  snprintf(target, sizeof target, "/proc/self/fd/%d", f);
  if (f < 0 || mount("/prism-init", target, NULL, MS_BIND, NULL) != 0 ||
      mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
    agent_log("cannot mount prism-init at /.prism/init: %m");
  if (f >= 0) close(f);
  if (dir >= 0) close(dir);
  if (root >= 0) close(root);
}

int rootfs_mount(const char *hostname, const struct limits *lim, char *err, size_t errlen) {
  host_refresh(lim);
  if (strlen(hostname) > 64) return FAIL("hostname longer than 64 bytes");
  if (mount_overlay(err, errlen) < 0) return -1;
  mount_init_binary();
  /* Past this point a failure is not undone: it leaves mounts moved, which only a reboot fixes. */
  static const char *moved[] = {"/dev", "/proc", "/sys"};
  char target[64];
  for (int i = 0; i < 3; i++) {
    snprintf(target, sizeof target, "/newroot%s", moved[i]);
    mkdir(target, 0755);
    if (mount(moved[i], target, NULL, MS_MOVE, NULL) != 0) return FAIL("move %s to %s: %m", moved[i], target);
  }
  static const struct { const char *dir, *type, *opts; unsigned long flags; } fs[] = {
      {"/newroot/tmp", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV},
      {"/newroot/dev/shm", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV},
      {"/newroot/dev/pts", "devpts", "mode=0620,ptmxmode=0666", MS_NOSUID | MS_NOEXEC},
  };
  for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) {
    mkdir(fs[i].dir, 0755);
    if (mount(fs[i].type, fs[i].dir, fs[i].type, fs[i].flags, fs[i].opts) != 0) return FAIL("mount %s: %m", fs[i].dir);
  }
  /*
   * switch_root: the initramfs cannot be unmounted (it is the rootfs), so move the new root over it
   * and chroot. This binary keeps running from the initramfs pages, which stay in memory.
   */
  if (chdir("/newroot") != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0)
    return FAIL("switch root to /newroot: %m");
  if (hostname[0] && sethostname(hostname, strlen(hostname)) != 0) return FAIL("sethostname: %m");
  if (loopback_up() != 0) return FAIL("bring up lo: %m");
  return sandbox_cgroup(lim, err, errlen);
}

/* Volumes mounted by `V`, unmounted by `Q` so that their file systems are clean for the next mount. */
#define MAX_VOLUMES 8
static char volume_paths[MAX_VOLUMES][256];
static int nvolumes;

/* "/dev/vdX" of the virtio disk whose /sys/block/vdX/serial is `serial`; -1 if none (yet). */
static int find_disk(const char *serial, char *dev, size_t n) {
  DIR *d = opendir("/sys/block");
  struct dirent *e;
  int found = -1;
  while (d && found < 0 && (e = readdir(d))) {
    if (strncmp(e->d_name, "vd", 2) != 0) continue;
    char path[300], val[64] = "";
    snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t r = read(fd, val, sizeof val - 1);
    close(fd);
    val[r > 0 ? r : 0] = 0;
    val[strcspn(val, "\n")] = 0;
    if (strcmp(val, serial) == 0) found = snprintf(dev, n, "/dev/%s", e->d_name) < (int)n ? 0 : -1;
  }
  if (d) closedir(d);
  return found;
}

/* mkdir -p, as root in the sandbox's root (its own file system: following its links is its business). */
static int mkdir_p(const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/*
 * A read-only volume's disk is read-only in QEMU too; `noload` skips the journal, whose replay would
 * need to write (a volume is unmounted cleanly by whoever wrote it last, so there is nothing to replay).
 */
int volume_mount(const char *serial, const char *path, int read_only, char *err, size_t errlen) {
  char dev[64];
  if (nvolumes >= MAX_VOLUMES) return FAIL("more than %d volumes", MAX_VOLUMES);
  if (strlen(path) >= sizeof volume_paths[0]) return FAIL("mount path longer than %zu bytes", sizeof volume_paths[0] - 1);
  for (long waited = 0; find_disk(serial, dev, sizeof dev) < 0; waited += 20) {
    if (waited >= 5000) return FAIL("no disk with serial %s after 5 s", serial);
    sleep_ms(20);
  }
  if (mkdir_p(path) != 0) return FAIL("create %s: %m", path);
  unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOATIME | (read_only ? MS_RDONLY : 0);
  if (mount(dev, path, "ext4", flags, read_only ? "noload" : NULL) != 0) return FAIL("mount %s (%s) on %s: %m", dev, serial, path);
  snprintf(volume_paths[nvolumes++], sizeof volume_paths[0], "%s", path);
  return 0;
}

/*
 * Q: stop everything and power off. The writable disk cannot be unmounted cleanly while it backs
 * our own root, so sync() (which commits ext4's journal) is what keeps its data; the lazy unmounts
 * are best effort.
 */
void power_off(struct agent *a) {
  (void)a;
  agent_log("power off");
  sync();
  kill(-1, SIGTERM);
  for (int i = 0; i < 50 && kill(-1, 0) == 0; i++) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    sleep_ms(20);
  }
  kill(-1, SIGKILL);
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  for (int i = nvolumes - 1; i >= 0; i--)
    if (umount2(volume_paths[i], 0) != 0) agent_log("unmount volume %s: %m", volume_paths[i]);
  sync();
  static const char *mounts[] = {"/dev/pts", "/dev/shm", "/tmp", "/proc", "/sys", "/dev", "/"};
  for (size_t i = 0; i < sizeof mounts / sizeof mounts[0]; i++) umount2(mounts[i], MNT_DETACH);
  reboot(RB_POWER_OFF);
  for (;;) pause(); /* reboot() failed: PID 1 must not exit */
}

int main(void) {
  if (getpid() != 1) {
    fprintf(stderr, "prism-agent: runs only as /init (PID 1) of a microVM\n");
    return 2;
  }
  mount_early();
  load_modules();
  struct agent a;
  if (agent_init(&a) < 0) {
    agent_log("cannot set up signals: %m");
    power_off(&a);
  }
  /*
   * The port shows up after the host's virtio-serial device announces it; without a virtio console
   * device at all (Firecracker) there is nothing to wait for.
   */
  if (virtio_device_present(VIRTIO_ID_CONSOLE)) vport = retry_ms(port_open, 5000);
  if (vport < 0 && (vsock_listener = vsock_listen()) >= 0) agent_log("no virtio port named " PORT_NAME "; listening on vsock port %d", VSOCK_PORT);
  else if (vport < 0) agent_log("no virtio port named " PORT_NAME " and no vsock; still looking");
  prepare_shared();
  agent_log("booted");
  agent_serve(&a);
}
