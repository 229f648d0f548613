/* Frame header and field codecs: pure functions, unit-tested directly (agent-test.c). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

void frame_hdr_encode(unsigned char out[FRAME_HDR], char type, uint32_t channel, uint32_t length) {
  out[0] = (unsigned char)type;
  for (int i = 0; i < 4; i++) {
    out[1 + i] = (unsigned char)(channel >> (24 - 8 * i));
    out[5 + i] = (unsigned char)(length >> (24 - 8 * i));
  }
}

struct frame_hdr frame_hdr_decode(const unsigned char in[FRAME_HDR]) {
  struct frame_hdr h = {in[0], 0, 0};
  for (int i = 1; i < 5; i++) {
    h.channel = h.channel << 8 | in[i];
    h.length = h.length << 8 | in[i + 4];
  }
  return h;
}

/* The next NUL-terminated field, or NULL when none is left (a last field without its NUL included). */
static char *next_field(char **cur, char *end) {
  if (*cur >= end) return NULL;
  char *f = *cur, *nul = memchr(f, 0, (size_t)(end - f));
  if (!nul) return NULL;
  *cur = nul + 1;
  return f;
}

/* A count: plain decimal digits, at most `max` (each counted field takes at least its NUL). */
static long parse_count(const char *s, long max) {
  if (!s || !s[0] || strlen(s) > 9 || s[strspn(s, "0123456789")]) return -1;
  long v = strtol(s, NULL, 10);
  return v <= max ? v : -1;
}

/* Fills `n` entries of a fresh NULL-terminated array from the next fields. */
static char **take_fields(char **cur, char *end, long n) {
  char **v = calloc((size_t)n + 1, sizeof *v);
  for (long i = 0; v && i < n; i++) {
    if (!(v[i] = next_field(cur, end))) {
      free(v);
      return NULL;
    }
  }
  return v;
}

const char *start_parse(char *payload, uint32_t len, struct start_req *r) {
  memset(r, 0, sizeof *r);
  char *cur = payload, *end = payload + len;
  char *cwd = next_field(&cur, end), *in = next_field(&cur, end);
  if (!cwd || !in) return "missing cwd or stdin field";
  if (in[0] && strcmp(in, "stdin") != 0) return "stdin field is neither \"stdin\" nor empty";
  const char *count = next_field(&cur, end);
  long argc = parse_count(count, end - cur);
  if (argc < 1) return "argc is not a number from 1 to the fields present";
  if (!(r->argv = take_fields(&cur, end, argc))) return "fewer argv fields than argc";
  count = next_field(&cur, end);
  long envc = parse_count(count, end - cur);
  if (envc < 0) return "envc is not a number up to the fields present";
  if (!(r->envp = take_fields(&cur, end, envc))) return "fewer env fields than envc";
  if (!(r->user = next_field(&cur, end))) return "missing user field";
  if (cur != end) return "bytes after the user field";
  r->cwd = cwd[0] ? cwd : "/";
  r->want_stdin = in[0] != 0;
  return NULL;
}

/* A terminal dimension: plain decimal 1..65535. */
static int parse_dim(const char *s, unsigned *out) {
  long v = parse_count(s, 65535);
  if (v < 1) return -1;
  *out = (unsigned)v;
  return 0;
}

const char *pty_start_parse(char *payload, uint32_t len, struct start_req *r) {
  char *cur = payload, *end = payload + len;
  unsigned cols, rows;
  if (parse_dim(next_field(&cur, end), &cols) < 0 || parse_dim(next_field(&cur, end), &rows) < 0) {
    memset(r, 0, sizeof *r);
    return "terminal size is not two numbers from 1 to 65535";
  }
  const char *why = start_parse(cur, (uint32_t)(end - cur), r);
  r->cols = cols;
  r->rows = rows;
  r->want_stdin = 1;
  return why;
}

int size_parse(const char *payload, uint32_t len, unsigned *cols, unsigned *rows) {
  char copy[32];
  if (len >= sizeof copy) return -1;
  memcpy(copy, payload, len);
  char *cur = copy, *end = copy + len;
  if (parse_dim(next_field(&cur, end), cols) < 0 || parse_dim(next_field(&cur, end), rows) < 0) return -1;
  return cur == end ? 0 : -1;
}

void start_free(struct start_req *r) {
  free(r->argv);
  free(r->envp);
  r->argv = r->envp = NULL;
}

/* One decimal id below 2^32-1 ((uid_t)-1 means "unchanged" to the kernel); advances *s. */
static int parse_id(const char **s, unsigned *out) {
  char *e;
  if (**s < '0' || **s > '9') return -1;
  unsigned long v = strtoul(*s, &e, 10);
  if (v >= 0xffffffffUL || e - *s > 10) return -1;
  *out = (unsigned)v;
  *s = e;
  return 0;
}

int user_parse(const char *s, struct user_spec *u) {
  memset(u, 0, sizeof *u);
  if (parse_id(&s, &u->uid) < 0 || *s++ != ' ' || parse_id(&s, &u->gid) < 0) return -1;
  if (!*s) return 0;
  if (*s++ != ' ') return -1;
  while (*s) {
    if (u->ngroups == MAX_GROUPS || parse_id(&s, &u->groups[u->ngroups++]) < 0) return -1;
    if (*s == ',' && !*++s) return -1;
    if (*s && (s[-1] != ',')) return -1;
  }
  return 0;
}
