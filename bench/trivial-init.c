/*
 * The bare-boot baseline's /init: powers the VM off as soon as the kernel hands over, mounting
 * nothing, so the measured time is kernel boot + QEMU start/exit and nothing of ours. The line it
 * prints lets the bench (and a person reading the console) tell "reached /init" from a panic.
 */
#include <sys/reboot.h>
#include <unistd.h>

int main(void) {
  static const char msg[] = "prism-trivial-init: reached /init\n";
  write(1, msg, sizeof msg - 1);
  sync();
  reboot(RB_POWER_OFF);
  return 1;
}
