/*
 * prism-agent's serve loop: one single-threaded poll loop multiplexes every exec session over the one
 * host stream (docs/microvm-agent-protocol.md; choices the document leaves open are in protocol.h).
 *
 * Nothing here may block: the port and every pipe are non-blocking, output waits in `out` until the
 * port takes it, and a pipe is simply not polled while its session has used up the window the host
 * granted (`W`: the host's reader is behind) or `out` is past OUT_HIGH_WATER, so commands block on
 * write while the loop keeps serving input, signals and other frames.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "net-config.h"

int agent_log_fd = 2;

void agent_log(const char *fmt, ...) {
  if (agent_log_fd < 0) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  dprintf(agent_log_fd, "prism-agent: %s\n", line);
}

int buf_reserve(struct buf *b, size_t n) {
  if (b->cap - b->len >= n) return 0;
  /* Compact only when at least half is consumed, so each byte is moved O(1) times on average. */
  if (b->off && b->off >= b->len - b->off) {
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    if (b->cap - b->len >= n) return 0;
  }
  size_t cap = b->cap ? b->cap : 65536;
  while (cap - b->len < n) cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d) return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}

int buf_append(struct buf *b, const void *p, size_t n) {
  if (buf_reserve(b, n) < 0) return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void buf_consume(struct buf *b, size_t n) {
  b->off += n;
  if (b->off == b->len) b->off = b->len = 0;
}

void buf_free(struct buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

/* Queues a frame. Out of memory drops it: there is nothing better to do with no memory left. */
void emit(struct agent *a, char type, uint32_t channel, const void *data, size_t len) {
  if (a->port < 0 || buf_reserve(&a->out, FRAME_HDR + len) < 0) return;
  frame_hdr_encode((unsigned char *)a->out.data + a->out.len, type, channel, (uint32_t)len);
  if (len) memcpy(a->out.data + a->out.len + FRAME_HDR, data, len);
  a->out.len += FRAME_HDR + len;
}

void session_fail(struct agent *a, uint32_t channel, const char *why) {
  char msg[256];
  int n = snprintf(msg, sizeof msg, "prism: %s\n", why);
  emit(a, F_STDERR, channel, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
  emit(a, F_EXIT, channel, "126 0", 5);
}

int agent_init(struct agent *a) {
  memset(a, 0, sizeof *a);
  a->port = a->stale = -1;
  a->max_sessions = MAX_SESSIONS;
  /* A command closing its stdin must not kill the agent; children restore SIG_DFL before exec. */
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  /* SIGIO: the port's host side connected or left (boot.c asks for it), so a reconnect is seen at once. */
  sigaddset(&chld, SIGIO);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) != 0) return -1;
  a->sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  return a->sigfd < 0 ? -1 : 0;
}

/*
 * The host went away: nobody will read the sessions' output, so they end (as under the oci runtime).
 * Unless detached (`D`): the host is saving the VM to resume it later, and the sessions carry on
 * when it says hello again.
 */
static void disconnect(struct agent *a, const char *why) {
  if (a->detached) agent_log("host disconnected (%s) while detached: keeping %d sessions", why, a->nsessions);
  else agent_log("host disconnected (%s), killing %d sessions", why, a->nsessions);
  while (!a->detached && a->nsessions) session_kill(a, a->sessions[0]);
  buf_free(&a->in);
  buf_free(&a->out);
  a->skip = 0;
  a->stale = a->port;
  a->port = -1;
}

/* A frame the agent cannot honour: ends its session (see protocol.h); ignored on control. */
static void reject(struct agent *a, uint32_t channel, const char *why) {
  if (channel == 0) return;
  struct session *s = session_find(a, channel);
  if (s) session_kill(a, s);
  session_fail(a, channel, why);
}

/* Parses a decimal field of `M`; an absent field is 0 (no limit). */
static int limit_field(char **cur, char *end, unsigned long long *out) {
  *out = 0;
  if (*cur >= end) return 0;
  char *f = *cur, *nul = memchr(f, 0, (size_t)(end - f));
  if (!nul || nul == f || strspn(f, "0123456789") != (size_t)(nul - f)) return -1;
  *out = strtoull(f, NULL, 10);
  *cur = nul + 1;
  return 0;
}

/* Parses an optional hex field of at most sizeof out bytes; absent or empty = none. */
static int hex_field(char **cur, char *end, unsigned char *out, size_t cap, size_t *n) {
  *n = 0;
  if (*cur >= end) return 0;
  char *f = *cur, *nul = memchr(f, 0, (size_t)(end - f));
  size_t len = nul ? (size_t)(nul - f) : 0;
  if (!nul || len % 2 || len / 2 > cap || strspn(f, "0123456789abcdef") != len) return -1;
  for (size_t i = 0; i < len / 2; i++) {
    char byte[3] = {f[2 * i], f[2 * i + 1], 0};
    out[i] = (unsigned char)strtoul(byte, NULL, 16);
  }
  *n = len / 2;
  *cur = nul + 1;
  return 0;
}

/* The answer of a control step: "ok", or "error: <err>" cut to fit. */
static void emit_result(struct agent *a, uint8_t type, const char *err) {
  if (!err[0]) {
    emit(a, type, 0, "ok", 2);
    return;
  }
  char reply[300];
  int n = snprintf(reply, sizeof reply, "error: %s", err);
  emit(a, type, 0, reply, (size_t)n < sizeof reply ? (size_t)n : sizeof reply - 1);
}

/* M: fields hostname, then optionally memory limit, pids limit, host time (ms), entropy (hex), open files. */
static void mount_rootfs(struct agent *a, char *p, uint32_t len) {
  char err[256] = "";
  struct limits lim;
  memset(&lim, 0, sizeof lim);
  char *end = p + len, *nul = len ? memchr(p, 0, len) : NULL;
  char *cur = nul ? nul + 1 : NULL;
  if (!nul || limit_field(&cur, end, &lim.memory_bytes) < 0 || limit_field(&cur, end, &lim.pids) < 0 ||
      limit_field(&cur, end, &lim.time_ms) < 0 || hex_field(&cur, end, lim.seed, sizeof lim.seed, &lim.seed_len) < 0 ||
      limit_field(&cur, end, &lim.nofile) < 0 || cur != end) {
    snprintf(err, sizeof err, "malformed M frame: want hostname[, memory bytes, pids, time ms, seed hex, open files], NUL-terminated");
  } else if (a->ready) {
    snprintf(err, sizeof err, "rootfs already mounted");
  } else if (rootfs_mount(p, &lim, err, sizeof err) == 0) {
    session_set_nofile(lim.nofile);
    a->ready = 1;
    agent_log("rootfs mounted, hostname %s", p);
    emit(a, F_MOUNT_REPLY, 0, "ok", 2);
    return;
  }
  emit_result(a, F_MOUNT_REPLY, err);
}

/* V: fields disk serial, absolute mount path, "ro" or "rw"; only once the rootfs is mounted. */
static void mount_volume(struct agent *a, char *p, uint32_t len) {
  char err[256] = "";
  char *f[3] = {0}, *cur = p, *end = p + len;
  int n = 0;
  for (char *nul; n < 3 && cur < end && (nul = memchr(cur, 0, (size_t)(end - cur))); cur = nul + 1) f[n++] = cur;
  if (n != 3 || cur != end || !f[0][0] || f[1][0] != '/' || (strcmp(f[2], "ro") != 0 && strcmp(f[2], "rw") != 0)) {
    snprintf(err, sizeof err, "malformed V frame: want disk serial, absolute mount path, ro|rw, NUL-terminated");
  } else if (!a->ready) {
    snprintf(err, sizeof err, "rootfs not mounted yet (M comes first)");
  } else if (volume_mount(f[0], f[1], strcmp(f[2], "ro") == 0, err, sizeof err) == 0) {
    agent_log("volume %s mounted on %s (%s)", f[0], f[1], f[2]);
    emit(a, F_VOLUME_REPLY, 0, "ok", 2);
    return;
  }
  emit_result(a, F_VOLUME_REPLY, err);
}

/*
 * F: fields host time (ms), entropy (hex), optionally a hostname: a VM resumed from a saved state wakes
 * with the old clock and RNG, and a copy of another sandbox (a fork) with that sandbox's hostname.
 */
static void refresh_facts(struct agent *a, char *p, uint32_t len) {
  struct limits lim;
  memset(&lim, 0, sizeof lim);
  char *cur = p, *end = p + len, *hostname = NULL;
  int bad = limit_field(&cur, end, &lim.time_ms) < 0 || hex_field(&cur, end, lim.seed, sizeof lim.seed, &lim.seed_len) < 0;
  if (!bad && cur < end) {
    char *nul = memchr(cur, 0, (size_t)(end - cur));
    if (!nul || nul == cur || nul - cur > 64) bad = 1;
    else hostname = cur, cur = nul + 1;
  }
  if (bad || cur != end) {
    emit_result(a, F_FACTS_REPLY, "malformed F frame: want time ms, seed hex[, hostname], NUL-terminated");
    return;
  }
  host_refresh(&lim);
  if (hostname && sethostname(hostname, strlen(hostname)) != 0) {
    char err[128];
    snprintf(err, sizeof err, "sethostname: %s", strerror(errno));
    emit_result(a, F_FACTS_REPLY, err);
    return;
  }
  emit(a, F_FACTS_REPLY, 0, "ok", 2);
}

/* N: the NIC and resolv.conf of a sandbox with a network; after M, since resolv.conf is in its root. */
static void configure_network(struct agent *a, char *p, uint32_t len) {
  char err[256] = "";
  struct net_config c;
  const char *bad = net_config_parse(p, len, &c);
  if (bad) snprintf(err, sizeof err, "malformed N frame: %s", bad);
  else if (!a->ready) snprintf(err, sizeof err, "N before M: the root file system is not mounted");
  else if (guest_network(&c, err, sizeof err) == 0) {
    emit(a, F_NETWORK_REPLY, 0, "ok", 2);
    return;
  }
  emit_result(a, F_NETWORK_REPLY, err);
}

static void dispatch(struct agent *a, const struct frame_hdr *h, char *p) {
  if (h->channel == 0) {
    if (h->type == F_HELLO) {
      /* A hello after `D` is the host back (after a resume, or a save that failed): output flows again. */
      if (a->detached) agent_log("host attached again: %d sessions carry on", a->nsessions);
      a->detached = 0;
      /* Then the channels of the sessions still running (kept through a detach), so that a host that
         does not know them (a restarted prismd) never starts a command on one of them. */
      static char hello[64 + 11 * MAX_SESSIONS];
      size_t n = (size_t)snprintf(hello, 64, "prism-agent %d %s", PROTOCOL_VERSION, a->ready ? "ready" : "booted");
      for (int i = 0; i < a->nsessions; i++) n += (size_t)snprintf(hello + n, sizeof hello - n, " %u", a->sessions[i]->channel);
      emit(a, F_HELLO_REPLY, 0, hello, n);
    } else if (h->type == F_MOUNT) {
      mount_rootfs(a, p, h->length);
    } else if (h->type == F_VOLUME) {
      mount_volume(a, p, h->length);
    } else if (h->type == F_NETWORK) {
      configure_network(a, p, h->length);
    } else if (h->type == F_DETACH) {
      /* Nothing is read from the sessions or reaped from now on, so `d` is the last frame until a hello.
         The disk gets what the page cache holds: a saved VM that is never resumed loses its processes,
         not the files they wrote. */
      a->detached = 1;
      sync();
      emit(a, F_DETACH_REPLY, 0, "ok", 2);
    } else if (h->type == F_FACTS) {
      refresh_facts(a, p, h->length);
    } else if (h->type == F_QUIT) {
      power_off(a);
    } else if (h->type == F_STATS) {
      char stats[256];
      sandbox_stats(stats, sizeof stats);
      emit(a, F_STATS_REPLY, 0, stats, strlen(stats));
    }
    return;
  }
  struct session *s = session_find(a, h->channel);
  if (h->channel > CHANNEL_MAX) reject(a, h->channel, "channel number above 2^31");
  else if ((h->type == F_START || h->type == F_PTY_START) && s) reject(a, h->channel, "S on a channel already in use");
  else if (h->type == F_START || h->type == F_PTY_START) session_start(a, h->channel, p, h->length, h->type == F_PTY_START);
  else if (h->type == F_STDIN || h->type == F_CLOSE || h->type == F_KILL || h->type == F_WINDOW) {
    if (s) session_input(a, s, (char)h->type, p, h->length);
  } else if (h->type == F_RESIZE) {
    if (s) session_resize(s, p, h->length);
  } else reject(a, h->channel, "unknown frame type");
}

/* Handles every complete frame in `in`; an oversized one is answered, then skipped as it arrives. */
static void parse_frames(struct agent *a) {
  while (a->port >= 0) {
    size_t avail = buf_used(&a->in);
    if (a->skip) {
      size_t n = a->skip < avail ? (size_t)a->skip : avail;
      buf_consume(&a->in, n);
      a->skip -= n;
      if (a->skip) return;
      continue;
    }
    if (avail < FRAME_HDR) return;
    struct frame_hdr h = frame_hdr_decode((unsigned char *)a->in.data + a->in.off);
    if (h.length > FRAME_MAX) {
      buf_consume(&a->in, FRAME_HDR);
      a->skip = h.length;
      reject(a, h.channel, "frame longer than 1 MiB");
      continue;
    }
    if (avail < FRAME_HDR + h.length) return;
    dispatch(a, &h, a->in.data + a->in.off + FRAME_HDR);
    if (a->port >= 0) buf_consume(&a->in, FRAME_HDR + h.length);
  }
}

static void port_read(struct agent *a) {
  if (buf_reserve(&a->in, PIPE_CHUNK) < 0) return;
  ssize_t r = read(a->port, a->in.data + a->in.len, PIPE_CHUNK);
  if (r > 0) {
    a->in.len += (size_t)r;
    parse_frames(a);
  } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
    disconnect(a, r == 0 ? "end of stream" : strerror(errno));
  }
}

static void flush(struct agent *a) {
  while (a->port >= 0 && buf_used(&a->out)) {
    ssize_t w = write(a->port, a->out.data + a->out.off, buf_used(&a->out));
    if (w > 0) buf_consume(&a->out, (size_t)w);
    else if (w < 0 && errno == EINTR) continue;
    else if (w < 0 && errno == EAGAIN) return;
    else disconnect(a, w < 0 ? strerror(errno) : "write returned 0");
  }
}

/* PID 1 inherits every orphan: collect them all; a session's command ends its session. */
static void reap(struct agent *a) {
  struct signalfd_siginfo si;
  while (read(a->sigfd, &si, sizeof si) == sizeof si) {
  }
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) session_reaped(a, pid, status);
}

static int poll_add(struct pollfd *p, int *n, int fd, short events) {
  p[*n] = (struct pollfd){fd, events, 0};
  return (*n)++;
}

void agent_serve(struct agent *a) {
  static struct pollfd p[2 + 3 * MAX_SESSIONS];
  for (;;) {
    if (a->port < 0) {
      a->port = port_reconnect(a->stale);
      a->stale = -1;
    }
    /* Detached: no session output is read and no child reaped (its exit frame would follow `d`). */
    int n = 0, i_port = -1, pipes = !a->detached && buf_used(&a->out) < OUT_HIGH_WATER;
    int i_sig = a->detached ? -1 : poll_add(p, &n, a->sigfd, POLLIN);
    if (a->port >= 0) {
      short ev = (a->stdin_pending <= STDIN_HIGH_WATER ? POLLIN : 0) | (buf_used(&a->out) ? POLLOUT : 0);
      i_port = poll_add(p, &n, a->port, ev);
    }
    for (int i = 0; i < a->nsessions; i++) {
      struct session *s = a->sessions[i];
      int flowing = pipes && session_may_send(s);
      s->poll_out = flowing && s->out_fd >= 0 ? poll_add(p, &n, s->out_fd, POLLIN) : -1;
      s->poll_err = flowing && s->err_fd >= 0 ? poll_add(p, &n, s->err_fd, POLLIN) : -1;
      s->poll_in = s->in_fd >= 0 && buf_used(&s->pending) ? poll_add(p, &n, s->in_fd, POLLOUT) : -1;
    }
    /* Disconnected: wake every 100 ms to look for the host again, never spin on POLLHUP. */
    if (poll(p, (nfds_t)n, a->port >= 0 ? -1 : 100) < 0) continue;
    /* Pipes first: the indices are only valid until a session is reaped or killed below. */
    for (int i = 0; i < a->nsessions; i++) {
      struct session *s = a->sessions[i];
      if (s->poll_out >= 0 && p[s->poll_out].revents) session_readable(a, s, 0);
      if (s->poll_err >= 0 && p[s->poll_err].revents) session_readable(a, s, 1);
      if (s->poll_in >= 0 && p[s->poll_in].revents) session_write_stdin(a, s);
    }
    if (i_sig >= 0 && p[i_sig].revents) reap(a);
    if (i_port >= 0 && (p[i_port].revents & POLLIN)) port_read(a);
    else if (i_port >= 0 && (p[i_port].revents & (POLLHUP | POLLERR | POLLNVAL))) disconnect(a, "hangup");
    flush(a);
  }
}
