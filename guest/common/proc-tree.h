#ifndef PRISM_PROC_TREE_H
#define PRISM_PROC_TREE_H
#include <sys/types.h>

/*
 * Kills a command (a process group leader) and everything it started. SIGKILL reaches every
 * descendant, even ones that left the group; other signals go to the group (or the child, if it has
 * not called setsid() yet).
 */
void kill_tree(pid_t root, int sig);

#endif
