/*
 * Wire format of the microVM agent protocol, version 8: docs/microvm-agent-protocol.md.
 * This file and src/runtime/microvm/agent-protocol.ts are the two definitions: change them together.
 *
 * Choices the document leaves open, made here so that both sides agree:
 * - Oversized frame (length > 1 MiB): answered like any malformed frame (E + X 126 0 on a session
 *   channel, ignored on control), then its payload is discarded as it streams in. The length is
 *   still trusted to find the next frame, so a host that sent a too-big frame stays in sync. (A stream
 *   that is truly corrupt cannot be resynchronised by any rule, having no frame markers; only a
 *   reconnect fixes it, and the agent cannot force one on a virtio port.)
 * - A malformed frame on a session channel ends that session: E (the reason) + X 126 0, and a command
 *   already running on the channel is killed and sends no X of its own. `S` on a busy channel is one.
 * - `I`, `C` and `K` on a channel with no session are ignored, not answered: they race with the
 *   command's exit (its X is already on the way), and a second X would confuse the host.
 * - `I` on a session started without stdin, or after `C`, is ignored.
 * - `K`'s payload is exactly one byte, a signal 1..64. SIGKILL kills the whole tree; other signals
 *   go to the command's process group.
 * - `S`: every field is required, user included (empty = root); bytes after it are malformed; the
 *   stdin field is exactly "stdin" or empty; counts are plain decimal; empty cwd means "/".
 *   The user is "uid gid" optionally followed by " g1,g2,..." (at most 256 groups).
 * - `N` is answered like `M`, even when malformed (`n error: ...`); before `M` it is refused
 *   (resolv.conf belongs in the sandbox's root).
 * - `M` is answered even when malformed (`m error: ...`): the host waits for that answer. Other
 *   control frames with an unknown type are ignored; payloads on `H` and `Q` are ignored.
 *   `M` after a successful `M` answers `m error: rootfs already mounted`.
 * - `V` is answered like `M` (`v ok` or `v error: ...`), malformed or not. Its fields are exactly three:
 *   a disk serial, an absolute mount path and `ro` or `rw`. Before `M` it answers an error.
 * - A channel number above 2^31 is answered like a malformed session frame on that channel.
 * - Sessions may run before `M` (state booted), inside the initramfs.
 * - `P` is `S` on a terminal: fields cols, rows (plain decimal, 1..65535), then exactly S's payload.
 *   A terminal session has no separate stdin end: `C` is ignored (EOF is ^D, sent as data); stderr
 *   stays empty (fds 0-2 are the terminal). `R` carries fields cols, rows; on a session without a
 *   terminal, or malformed, it is ignored (a resize races the command's exit like `K` does).
 *   `K` on a terminal sends any signal but SIGKILL to the terminal's foreground process group.
 * - `W`'s payload is exactly 8 bytes (u64 big-endian); other lengths are malformed. A limit at or
 *   below the current one is ignored: limits only grow, so a repeated W (after a reconnect) is
 *   harmless. `W` on a channel with no session is ignored, like `I`.
 * - The output a command wrote before it exited is sent even past the limit, so its X never waits
 *   for the host to read: at most what its pipes hold (64 KiB each, 1 MiB at most: commands lack
 *   CAP_SYS_RESOURCE to raise a pipe past /proc/sys/fs/pipe-max-size). A terminal's is read for at
 *   most 50 ms after the exit (docs: the terminal section).
 * - Stdin has no flow control in v1: the agent buffers it per session, and while more than 16 MiB is
 *   buffered over all sessions it stops reading the port, so the host's writes block as a socket's
 *   would. A host must not push megabytes into a command that does not read them: until it drains,
 *   no other frame (K included) is read. Disconnecting recovers.
 */
#ifndef PRISM_AGENT_PROTOCOL_H
#define PRISM_AGENT_PROTOCOL_H

#include <stdint.h>

#define PROTOCOL_VERSION 8
#define FRAME_HDR 9            /* type u8, channel u32 BE, length u32 BE */
#define FRAME_MAX (1u << 20)   /* longest payload either side sends */
#define CHANNEL_MAX 0x80000000u
/* Output bytes (O and E payloads) a session may send before the host's first `W`. */
#define OUT_WINDOW (1u << 20)

enum frame_type {
  F_HELLO = 'H', F_HELLO_REPLY = 'h', F_MOUNT = 'M', F_MOUNT_REPLY = 'm', F_QUIT = 'Q',
  F_STATS = 'T', F_STATS_REPLY = 't', F_NETWORK = 'N', F_NETWORK_REPLY = 'n', F_VOLUME = 'V', F_VOLUME_REPLY = 'v',
  F_DETACH = 'D', F_DETACH_REPLY = 'd', F_FACTS = 'F', F_FACTS_REPLY = 'f',
  F_START = 'S', F_STDIN = 'I', F_CLOSE = 'C', F_KILL = 'K',
  F_PTY_START = 'P', F_RESIZE = 'R', F_WINDOW = 'W',
  F_STDOUT = 'O', F_STDERR = 'E', F_EXIT = 'X',
};

struct frame_hdr {
  uint8_t type;
  uint32_t channel, length;
};

void frame_hdr_encode(unsigned char out[FRAME_HDR], char type, uint32_t channel, uint32_t length);
struct frame_hdr frame_hdr_decode(const unsigned char in[FRAME_HDR]);

/* An `S` payload split in place: the strings point into it. argv/envp are NULL-terminated arrays. */
struct start_req {
  const char *cwd, *user;
  int want_stdin;
  char **argv, **envp;
  unsigned cols, rows; /* the terminal's size (P); 0 for S */
};
/* NULL when well formed, else why not. Always call start_free afterwards. */
const char *start_parse(char *payload, uint32_t len, struct start_req *r);
/* `P`: cols, rows, then S's fields. Same contract as start_parse. */
const char *pty_start_parse(char *payload, uint32_t len, struct start_req *r);
/* `R`: cols, rows; 0 when well formed, -1 otherwise. */
int size_parse(const char *payload, uint32_t len, unsigned *cols, unsigned *rows);
void start_free(struct start_req *r);

#define MAX_GROUPS 256
struct user_spec {
  unsigned uid, gid;
  int ngroups;
  unsigned groups[MAX_GROUPS];
};
/* "uid gid[ g1,g2,...]"; 0 when well formed, -1 otherwise. */
int user_parse(const char *s, struct user_spec *u);

#endif
