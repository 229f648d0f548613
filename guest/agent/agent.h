/* The agent's core (agent.c: serve loop, session.c: exec sessions) and the seams around it. */
#ifndef PRISM_AGENT_H
#define PRISM_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "protocol.h"

#define MAX_SESSIONS 256
/*
 * Past this much unsent output the pipes are no longer read: commands block, the loop never does.
 * Each session's window (`W`) bounds it first; this is for hosts that grant more than they read.
 */
#define OUT_HIGH_WATER (16u << 20)
/* Past this much unwritten stdin (all sessions) the port is no longer read; see protocol.h. */
#define STDIN_HIGH_WATER (16u << 20)
#define PIPE_CHUNK 65536

/* A byte queue: data[off..len) is queued. */
struct buf {
  char *data;
  size_t off, len, cap;
};
int buf_reserve(struct buf *b, size_t n); /* room for n more bytes at data+len; -1 when out of memory */
int buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);
static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }

struct session {
  uint32_t channel;
  pid_t pid;                   /* never reaped while the session exists, so never reused */
  int in_fd, out_fd, err_fd;   /* -1 once closed */
  int pty_fd;                  /* a terminal session's pty master (for ioctls), else -1 */
  int stdin_closing;           /* C received: close in_fd once pending is written */
  struct buf pending;          /* stdin the command has not read yet */
  int poll_out, poll_err, poll_in;  /* this round's pollfd indices, -1 when not polled */
  unsigned long long oom_before;   /* the sandbox cgroup's oom_kill count when the command started */
  uint64_t sent, limit;        /* output bytes sent (O and E), and how many the host allows (`W`) */
};

struct agent {
  int port;      /* the host stream, -1 while disconnected */
  int stale;     /* the previous stream, handed to port_reconnect */
  int sigfd;     /* SIGCHLD */
  int ready;     /* rootfs mounted (state `ready`) */
  int detached;  /* `D` seen: output held, sessions kept across a disconnect, until the next hello */
  int max_sessions;
  struct buf in, out;
  uint64_t skip; /* payload bytes of an oversized frame still to discard */
  size_t stdin_pending;
  int nsessions;
  struct session *sessions[MAX_SESSIONS];
};

/* agent.c */
extern int agent_log_fd;
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int agent_init(struct agent *a); /* blocks SIGCHLD into a signalfd, ignores SIGPIPE */
void agent_serve(struct agent *a) __attribute__((noreturn));
void emit(struct agent *a, char type, uint32_t channel, const void *data, size_t len);
void session_fail(struct agent *a, uint32_t channel, const char *why); /* E + X 126 0 */

/* session.c */
struct session *session_find(struct agent *a, uint32_t channel);
/* S, or P when `tty` (the command on a new terminal). */
void session_start(struct agent *a, uint32_t channel, char *payload, uint32_t len, int tty);
void session_input(struct agent *a, struct session *s, char type, const char *payload, uint32_t len); /* I C K W */
int session_may_send(const struct session *s); /* within the host's output window (`W`) */
void session_readable(struct agent *a, struct session *s, int is_err);
void session_write_stdin(struct agent *a, struct session *s);
void session_reaped(struct agent *a, pid_t pid, int status);
void session_kill(struct agent *a, struct session *s); /* kills the tree; no X is sent */
void session_resize(struct session *s, const char *payload, uint32_t len); /* R */

/*
 * Seams, implemented by boot.c in the VM and by agent-test.c in tests.
 * port_reconnect: called while disconnected (at most every 100 ms unless a child exits) with the
 *   previous stream or -1; it owns that fd from then on (keeps or closes it). Returns a non-blocking
 *   close-on-exec fd to serve, or -1 when the host is still away.
 * rootfs_mount: does `M`; 0, or -1 with a message in err. volume_mount: does `V` (after `M`).
 * power_off: does `Q`; does not return in the VM.
 * sandbox_stats, sandbox_oom_kills: the sandbox cgroup (limits and usage of every command).
 */
/*
 * What `M` carries besides the hostname: the sandbox's limits (0 = none), applied to every command
 * through a cgroup in the guest, and the host's clock and fresh entropy (0 / empty = none), which a VM
 * restored from a template snapshot needs: it wakes with the template's clock and RNG state.
 */
struct limits {
  unsigned long long memory_bytes;
  unsigned long long pids;
  unsigned long long time_ms;
  unsigned char seed[64];
  size_t seed_len;
  unsigned long long nofile; /* RLIMIT_NOFILE (soft = hard) of every command; 0 = the agent's own */
};

/* Sets the clock and reseeds the RNG from the host's facts (time_ms, seed) of `lim`: after M, and after a resume (F). */
void host_refresh(const struct limits *lim);

/* Applies the sandbox's open-file limit to commands started from now on (0 = leave as is). */
void session_set_nofile(unsigned long long n);

int port_reconnect(int previous);
int rootfs_mount(const char *hostname, const struct limits *lim, char *err, size_t errlen);
/* `V`: mounts the disk whose virtio serial is `serial` (ext4) on `path` in the sandbox's root; 0, or -1 with a message. */
int volume_mount(const char *serial, const char *path, int read_only, char *err, size_t errlen);
void power_off(struct agent *a);
/* `T`: "pids N memory BYTES oom_kills K" of the sandbox cgroup into out. */
void sandbox_stats(char *out, size_t n);
/* The sandbox cgroup's oom_kill counter (memory.events); 0 before `M`. */
unsigned long long sandbox_oom_kills(void);

#endif
