/* agent-test: the frame, start, size and user codecs, without an agent. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "net-config.h"
#include "seccomp.h"
#include "agent-test.h"

void test_frame_codec(void) {
  unsigned char h[FRAME_HDR];
  frame_hdr_encode(h, 'S', 0x80000000u, 0x00100000u);
  CHECK(memcmp(h, "S\x80\0\0\0\0\x10\0\0", 9) == 0);
  struct frame_hdr d = frame_hdr_decode(h);
  CHECK(d.type == 'S' && d.channel == 0x80000000u && d.length == FRAME_MAX);
}

static const char *parse(const char *p, size_t n) {
  static char copy[256];
  struct start_req r;
  memcpy(copy, p, n);
  const char *why = start_parse(copy, (uint32_t)n, &r);
  start_free(&r);
  return why;
}
#define PARSE(lit) parse(LIT(lit))

void test_start_parse(void) {
  char p[] = "/tmp\0stdin\0002\0ls\0-l\0001\0A=1\0\0";
  struct start_req r;
  CHECK(start_parse(p, sizeof p - 1, &r) == NULL);
  CHECK(strcmp(r.cwd, "/tmp") == 0 && r.want_stdin && strcmp(r.argv[1], "-l") == 0 && !r.argv[2]);
  CHECK(strcmp(r.envp[0], "A=1") == 0 && !r.envp[1] && strcmp(r.user, "") == 0);
  start_free(&r);
  CHECK(PARSE("\0\0001\0true\0000\0\0") == NULL);
  CHECK(PARSE("\0\0001\0true\0000\0") != NULL);           /* no user field */
  CHECK(PARSE("\0\0001\0true\0000\0\0x") != NULL);        /* trailing bytes */
  CHECK(PARSE("\0\0005\0true\0000\0\0") != NULL);         /* argc larger than the fields */
  CHECK(PARSE("\0\0001\0true\0009\0\0") != NULL);         /* envc larger than the fields */
  CHECK(PARSE("\0\0000\0000\0\0") != NULL);                /* argc 0 */
  CHECK(PARSE("\0\0-1\0true\0000\0\0") != NULL);           /* argc not plain digits */
  CHECK(PARSE("\0yes\0001\0true\0000\0\0") != NULL);      /* stdin field */
  CHECK(PARSE("\0\0001\0tru") != NULL);                    /* truncated */
  CHECK(PARSE("") != NULL);
  CHECK(PARSE("\0\0004294967297\0true\0000\0\0") != NULL); /* huge argc */
}

void test_size_parse(void) {
  char p[] = "80\00024\0/\0\0001\0sh\0000\0\0";
  struct start_req r;
  unsigned c, w;
  CHECK(pty_start_parse(p, sizeof p - 1, &r) == NULL && r.cols == 80 && r.rows == 24 && r.want_stdin && strcmp(r.argv[0], "sh") == 0);
  start_free(&r);
  char bad[] = "0\00024\0/\0\0001\0sh\0000\0\0";
  CHECK(pty_start_parse(bad, sizeof bad - 1, &r) != NULL);
  start_free(&r);
  CHECK(size_parse(LIT("100\00030\0"), &c, &w) == 0 && c == 100 && w == 30);
  CHECK(size_parse(LIT("100\0"), &c, &w) < 0 && size_parse(LIT("65536\0001\0"), &c, &w) < 0 && size_parse(LIT("1\0001\0x"), &c, &w) < 0);
}

void test_user_parse(void) {
  struct user_spec u;
  CHECK(user_parse("1000 1000", &u) == 0 && u.uid == 1000 && u.gid == 1000 && u.ngroups == 0);
  CHECK(user_parse("1 2 ", &u) == 0 && u.ngroups == 0);
  CHECK(user_parse("1 2 3,4", &u) == 0 && u.ngroups == 2 && u.groups[1] == 4);
  CHECK(user_parse("1", &u) < 0 && user_parse("a 1", &u) < 0 && user_parse("1 2 3,", &u) < 0);
  CHECK(user_parse("1 2 3x", &u) < 0 && user_parse("4294967295 0", &u) < 0 && user_parse("-1 0", &u) < 0);
}
