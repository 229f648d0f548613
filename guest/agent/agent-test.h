/*
 * What agent-test's files share: checks, the client that drives the agent frame by frame the way
 * prismd drives the virtio port, and the tests each file defines (run in agent-test.c's order).
 */
#ifndef PRISM_AGENT_TEST_H
#define PRISM_AGENT_TEST_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/un.h>

#include "agent.h"


#define CHECK(c)                                                                 \
  do {                                                                           \
    if (!(c)) {                                                                  \
      fprintf(stderr, "    %s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
      exit(1);                                                                   \
    }                                                                            \
  } while (0)
#define TEST_MAX_SESSIONS 32
#define TEST_MAX_SESSIONS 32
#define ARGV(...) ((const char *[]){__VA_ARGS__, NULL})
#define SH(script) ARGV("sh", "-c", script)
/* A string literal as pointer and length, NULs inside included. */
#define LIT(s) s, sizeof s - 1

/* Where the agent under test listens (set by agent-test.c before it starts). */
extern struct sockaddr_un agent_addr;
/* The fake cgroup's oom_kill counter: a number in a file the tests' commands write. */
extern char oom_file[64];

struct frame {
  char type;
  uint32_t ch, len;
  char data[FRAME_MAX + 1]; /* NUL-terminated for convenience */
};

struct result {
  struct buf out, err;
  char exit[32];
};

/* PATH as commands get it, NULL-terminated. */
extern const char *path_env[];

long now_ms(void);
int conn(void);
void write_all(int fd, const void *p, size_t n);
void send_frame(int fd, char type, uint32_t ch, const void *p, size_t n);
/* S with NUL-joined fields (P when `size` is "cols\0rows\0"); argv and env are NULL-terminated. */
void send_start_on(int fd, uint32_t ch, const char *size, size_t size_len, const char *cwd, int in, const char **argv, const char **env, const char *user);
void send_start(int fd, uint32_t ch, const char *cwd, int in, const char **argv, const char **env, const char *user);
/* S of `argv` with PATH set, in the default directory, as the default user. */
void start(int fd, uint32_t ch, int in, const char **argv);
void read_full(int fd, void *p, size_t n);
/* The next frame (one buffer, overwritten by the next call). */
struct frame *recv_frame(int fd);
/* W: channel `ch` may send output up to `limit` bytes in all. */
void send_window(int fd, uint32_t ch, uint64_t limit);
/* Reads frames until channels first..first+n-1 all sent X; nothing else may arrive. */
void collect(int fd, uint32_t first, int n, struct result *res);
int out_is(struct buf *b, const char *want);
/* S of `argv` on `ch`, then its output and exit. */
struct result run(int fd, uint32_t ch, const char **argv);

/* agent-test-codec.c: the codecs, without an agent. */
void test_frame_codec(void);
void test_start_parse(void);
void test_size_parse(void);
void test_user_parse(void);
/* agent-test-sessions.c: commands and their sessions over the socket. */
void test_hello_booted(void);
void test_echo(void);
void test_exit_codes(void);
void test_stderr_separate(void);
void test_stdin_cat(void);
void test_cwd_env_user(void);
void test_big_output(void);
void test_concurrent(void);
void test_kill(void);
void test_pty(void);
void test_oom_in_exit(void);
void test_malformed(void);
void test_not_found(void);
void test_background(void);
void test_slow_consumers(void);
void test_window(void);
void test_host_not_reading(void);
void test_session_limit(void);
void test_disconnect_kills(void);
void test_detach_keeps_sessions(void);
void test_quit(void);
/* agent-test-guest.c: what the agent sets up in the guest, and how commands are confined. */
void test_volume_before_mount(void);
void test_volume(void);
void test_mount(void);
void test_net_config_parse(void);
void test_no_new_privs(void);
void test_seccomp_filter(void);
void test_command_confinement(void);

#endif
