/*
 * The seccomp deny filter every command in the guest runs under, and the capability bound of root
 * commands: the same walls an oci task has (src/runtime/oci/seccomp-profile.ts, runtime-spec.ts),
 * so root in a microvm sandbox can do no more in its kernel than root in a container can in the
 * host's. The VM is then a second wall, not the only one.
 */
#ifndef PRISM_AGENT_SECCOMP_H
#define PRISM_AGENT_SECCOMP_H

/*
 * Installs the filter on the calling task (inherited by its children and kept across exec). Needs
 * no_new_privs set first (or CAP_SYS_ADMIN). 0, or -1 with errno.
 */
int seccomp_deny_install(void);

/*
 * Drops every capability outside oci's default set from the bounding set, so that a root command's
 * exec leaves it only those. Needs CAP_SETPCAP. 0, or -1 with errno.
 */
int caps_bound_to_task_set(void);

#endif
