/* Shared by the parts of prism-init: see prism-init.c for what the binary is. */
#ifndef PRISM_INIT_H
#define PRISM_INIT_H
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
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define LISTEN_FD 3
#define MAX_FRAME (1u << 20)
#define MAX_ARGS 8192
#define STDIN_HIGH_WATER (4u << 20)

/* exec-agent.c: writes all of buf (EINTR and a full non-blocking fd waited out); -1 on error. */
int write_all(int fd, const void *buf, size_t n);
/* exec-agent.c: the next NUL-terminated field of a payload, or NULL. */
char *next_field(char **cur, char *end);
/* exec-agent.c: serves one command on connection `c`, in its own process; never returns. */
void serve(int c);
/* layer-fixup.c: applies whiteouts, opaque markers and xattrs under `dest` (instructions on stdin). */
int layer_fixup(const char *dest);
int layer_scan(const char *src);
/* relay.c: copies stdin/stdout to and from the exec agent at `path` (the docker driver's exec path). */
int relay(const char *path);
/* fs-helper.c: `prism-init fs OP ARGS...`, a file operation inside the task. */
int fs_main(int argc, char **argv);
/* pid-watch.c: `prism-init pidwatch`, on the host: process exits as lines, for the daemon. */
int pid_watch(void);
/* spawn-server.c: `prism-init spawnd`, on the host: starts commands for the daemon (cheap forks). */
int spawn_server(void);
/* host-mount.c: `prism-init mount-loop IMAGE TARGET` and `prism-init umount PREFIX...`, on the host. */
int mount_loop(const char *image, const char *target);
int unmount_under(int count, char **prefixes);

#endif
