/*
 * prism-init: PID 1 of an oci task.
 *
 * Images may ship without a shell or sleep, so the driver bind-mounts this static binary into every
 * container. As PID 1 it must (a) reap every zombie, because processes started by `runc exec` whose
 * parent dies are reparented to it, and (b) exit promptly on SIGTERM/SIGINT, because the kernel does
 * not apply default actions to signals sent to a namespace's init.
 *
 * All signals we care about are blocked and consumed synchronously with sigwaitinfo(), which avoids
 * handler races and keeps the loop trivial.
 */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void reap_all(void) {
  /* One SIGCHLD may stand for many exits; collect until none are left. */
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  sigset_t set;
  siginfo_t info;

  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  /* Block before anything else so no signal is lost between setup and the first wait. */
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return 1;

  for (;;) {
    int sig = sigwaitinfo(&set, &info);
    if (sig < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (sig == SIGCHLD) {
      reap_all();
    } else if (sig == SIGTERM || sig == SIGINT) {
      reap_all();
      return 0;
    }
    /* SIGHUP, SIGQUIT, SIGUSR1/2: ignored, so a stray signal cannot end the task. */
  }
}
