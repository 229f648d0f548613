/* `N`: the guest NIC's configuration (docs/microvm-agent-protocol.md), parsed by net-config.c, applied by net.c. */
#ifndef PRISM_AGENT_NET_CONFIG_H
#define PRISM_AGENT_NET_CONFIG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_NAMESERVERS 3 /* what glibc's and musl's resolvers read from resolv.conf */

struct net_config {
  struct in_addr address, gateway;
  unsigned prefix; /* 1..32 */
  unsigned mtu;    /* 68..65535 */
  int nnameservers;
  struct in_addr nameservers[MAX_NAMESERVERS];
};

/* Fields address/prefix, gateway, MTU, then up to MAX_NAMESERVERS name servers, each NUL-terminated.
 * NULL when well formed, else why not. */
const char *net_config_parse(char *payload, uint32_t len, struct net_config *c);

/* Seam: configures the NIC and writes /etc/resolv.conf (net.c in the VM, agent-test.c in tests).
 * 0, or -1 with a message in err. */
int guest_network(const struct net_config *c, char *err, size_t errlen);

#endif
