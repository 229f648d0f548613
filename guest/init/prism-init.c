/*
 * prism-init: PID 1 of every oci task, and its exec agent.
 *
 * Images may ship without a shell or sleep, so the driver bind-mounts this static binary into every
 * container. As PID 1 it (a) reaps every zombie (orphans are reparented to it) and (b) exits on
 * SIGTERM/SIGINT, since the kernel applies no default action to signals sent to a namespace's init.
 *
 * It also runs commands for the daemon. `runc exec` costs a Go runtime start and a namespace join per
 * command (~12 ms); a fork inside the task costs well under one. The daemon reaches the agent through
 * a unix socket it can never see from inside the task: the host side runs
 *     prism-init listen PATH [--overlay OPTIONS TARGET] -- runc run --preserve-fds 1 ...
 * which mounts the task's rootfs (with --overlay), binds PATH on the host, puts the listening socket
 * on fd 3 and execs runc, which hands fd 3 to the container's init. Sandboxed code cannot reach it
 * (every agent fd is close-on-exec). The exec agent is exec-agent.c.
 *
 * A third job, on the host: `prism-init layer-fixup DEST` writes overlay whiteouts, opaque markers and
 * xattrs for the image unpacker, which Node cannot (layer-fixup.c). A fourth, inside docker tasks:
 * `prism-init relay SOCKET` bridges a `docker exec`'s stdin/stdout to the exec agent (relay.c). A fifth,
 * inside every task (oci, docker, and microvm, whose agent mounts it from the initramfs):
 * `prism-init fs OP ARGS` does the files API's work in the sandbox's own root (fs-helper.c). A sixth,
 * on the host: `prism-init pidwatch` reports the end of the daemon's task processes (pid-watch.c), and
 * `prism-init spawnd` starts commands for the daemon without a fork of the daemon (spawn-server.c).
 *
 * Protocol (one connection per command; frames are type:u8, length:u32 big-endian, payload):
 *   daemon -> agent  'S' start: NUL-terminated fields: cwd, "stdin"|"", argc, argv..., envc, env...,
 *                        and optionally the user as "uid gid g1,g2" (absent or "": root, the task's
 *                        own), then optionally a terminal size "cols rows": the command then runs in
 *                        a new session on a new pty (its controlling tty, fds 0-2); its bytes travel
 *                        as 'I' and 'O' only, 'C' is ignored (EOF is the terminal's ^D, sent as data)
 *                    'I' stdin bytes   'C' close stdin   'K' signal the command's tree (payload: u8;
 *                        on a tty any signal but SIGKILL goes to the terminal's foreground group)
 *                    'R' resize the terminal: "cols rows" (ignored without a tty)
 *   agent -> daemon  'O' stdout bytes  'E' stderr bytes  'X' exit: "<exitCode> <signal>"
 * The exit frame comes once the command exited and what it wrote is drained; the agent then half-closes
 * and reads (discarding) until the daemon closes its side, so a frame the daemon sent meanwhile (stdin's
 * end after a fast command) neither fails nor resets the connection. A daemon that hangs up before the
 * exit frame gets the command's whole process tree killed.
 */
#define _GNU_SOURCE
#include "prism-init.h"

/*
 * Host side: optionally mount the task's overlay rootfs (saves the daemon spawning mount(8) on the
 * create path), bind PATH, put the listener on fd 3 and exec the rest of argv (runc run ...).
 */
static int listen_and_exec(const char *path, const char *overlay_opts, const char *overlay_target, char **cmd) {
  if (overlay_opts && mount("overlay", overlay_target, "overlay", 0, overlay_opts) != 0) {
    fprintf(stderr, "prism-init: cannot mount overlay on %s: %s\n", overlay_target, strerror(errno));
    return 2;
  }
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    fprintf(stderr, "prism-init: socket path too long: %s\n", path);
    return 2;
  }
  strcpy(addr.sun_path, path);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  unlink(path);
  if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(path, 0600) < 0 || listen(s, 128) < 0) {
    fprintf(stderr, "prism-init: cannot listen on %s: %s\n", path, strerror(errno));
    return 2;
  }
  if (s != LISTEN_FD && (dup2(s, LISTEN_FD) < 0 || close(s) < 0)) return 2;
  execvp(cmd[0], cmd);
  fprintf(stderr, "prism-init: cannot run %s: %s\n", cmd[0], strerror(errno));
  return 127;
}

int main(int argc, char **argv) {
  /* prism-init layer-fixup DEST < records */
  if (argc == 3 && strcmp(argv[1], "layer-fixup") == 0) return layer_fixup(argv[2]);
  /* prism-init layer-scan SRC > records (an upper dir's opaque directories, for a snapshot) */
  if (argc == 3 && strcmp(argv[1], "layer-scan") == 0) return layer_scan(argv[2]);
  /* prism-init fs OP ARGS... (the files API, run inside the task: fs-helper.c) */
  if (argc >= 3 && strcmp(argv[1], "fs") == 0) return fs_main(argc, argv);
  /* prism-init pidwatch (host: process exits for the daemon, pid-watch.c) */
  if (argc == 2 && strcmp(argv[1], "pidwatch") == 0) return pid_watch();
  /* prism-init spawnd (host: starts commands for the daemon, spawn-server.c) */
  if (argc == 2 && strcmp(argv[1], "spawnd") == 0) return spawn_server();
  /* prism-init mount-loop IMAGE TARGET, prism-init umount PREFIX... (host: host-mount.c) */
  if (argc == 4 && strcmp(argv[1], "mount-loop") == 0) return mount_loop(argv[2], argv[3]);
  if (argc >= 3 && strcmp(argv[1], "umount") == 0) return unmount_under(argc - 2, argv + 2);
  /* prism-init relay SOCKET (docker driver: stdin/stdout <-> exec agent) */
  if (argc == 3 && strcmp(argv[1], "relay") == 0) return relay(argv[2]);
  /* prism-init listen PATH [--overlay OPTIONS TARGET] -- CMD... */
  if (argc >= 5 && strcmp(argv[1], "listen") == 0) {
    int i = 3;
    const char *opts = NULL, *target = NULL;
    if (argc >= 8 && strcmp(argv[3], "--overlay") == 0) {
      opts = argv[4];
      target = argv[5];
      i = 6;
    }
    if (strcmp(argv[i], "--") == 0 && i + 1 < argc) return listen_and_exec(argv[2], opts, target, argv + i + 1);
    fprintf(stderr, "usage: prism-init listen PATH [--overlay OPTIONS TARGET] -- CMD...\n");
    return 2;
  }

  /*
   * Not dumpable: no process of the task can ptrace PID 1 (and with it the agent's connections to
   * the daemon) or read its memory; without CAP_SYS_PTRACE the kernel then refuses even root in the
   * task. The commands it starts are dumpable again, as execve resets the flag.
   */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return 1;

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  sigaddset(&set, SIGPIPE);
  /* Block before anything else so no signal is lost; they are consumed through a signalfd. */
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return 1;
  int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) return 1;

  /* fd 3 is the agent's listening socket when the driver passed one; otherwise only reap. */
  int opt = 0;
  socklen_t optlen = sizeof opt;
  int lfd = getsockopt(LISTEN_FD, SOL_SOCKET, SO_ACCEPTCONN, &opt, &optlen) == 0 && opt ? LISTEN_FD : -1;
  if (lfd >= 0) fcntl(lfd, F_SETFD, FD_CLOEXEC);

  for (;;) {
    struct pollfd p[2] = {{sfd, POLLIN, 0}, {lfd, POLLIN, 0}};
    if (poll(p, lfd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) return 0;
        /* SIGHUP, SIGQUIT, SIGUSR1/2, SIGPIPE: ignored, so a stray signal cannot end the task. */
      }
      /* One SIGCHLD may stand for many exits; collect until none are left. */
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
    }
    if (lfd >= 0 && (p[1].revents & POLLIN)) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c < 0) continue;
      pid_t h = fork();
      if (h == 0) {
        close(sfd);
        close(lfd);
        serve(c);
      }
      close(c);
    }
  }
}
