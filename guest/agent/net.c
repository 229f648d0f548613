/*
 * `N` in the VM: the sandbox's NIC (virtio-net, the only interface besides lo) takes the address,
 * MTU and default route the host gives it, and /etc/resolv.conf (in the overlay, so after `M`) names
 * the host's DNS filter. The MAC is the host's choice already (QEMU's `mac=`). Classic ioctls keep it
 * small: no netlink. The host's tc/nft rules, not anything here, are what enforce the policy.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "net-config.h"

#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* The first interface that is not lo, waiting up to 2 s for virtio_net to register it. */
static int find_nic(char name[IF_NAMESIZE]) {
  for (int waited = 0; waited <= 2000; waited += 20) {
    struct if_nameindex *list = if_nameindex();
    for (struct if_nameindex *i = list; i && i->if_index; i++) {
      if (strcmp(i->if_name, "lo") != 0) {
        snprintf(name, IF_NAMESIZE, "%s", i->if_name);
        if_freenameindex(list);
        return 0;
      }
    }
    if (list) if_freenameindex(list);
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
  }
  return -1;
}

static void set_in(struct sockaddr *sa, struct in_addr a) {
  struct sockaddr_in *in = (struct sockaddr_in *)sa;
  memset(in, 0, sizeof *in);
  in->sin_family = AF_INET;
  in->sin_addr = a;
}

static int configure_nic(int s, const char *nic, const struct net_config *c, char *err, size_t errlen) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IF_NAMESIZE, "%s", nic);
  ifr.ifr_mtu = (int)c->mtu;
  if (ioctl(s, SIOCSIFMTU, &ifr) != 0) return FAIL("set MTU %u on %s: %m", c->mtu, nic);
  set_in(&ifr.ifr_addr, c->address);
  if (ioctl(s, SIOCSIFADDR, &ifr) != 0) return FAIL("set address on %s: %m", nic);
  struct in_addr mask = {htonl(c->prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> c->prefix))};
  set_in(&ifr.ifr_netmask, mask);
  if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) return FAIL("set netmask on %s: %m", nic);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) return FAIL("read flags of %s: %m", nic);
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) return FAIL("bring up %s: %m", nic);
  struct rtentry rt;
  memset(&rt, 0, sizeof rt);
  struct in_addr any = {0};
  set_in(&rt.rt_dst, any);
  set_in(&rt.rt_genmask, any);
  set_in(&rt.rt_gateway, c->gateway);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  rt.rt_dev = (char *)nic;
  if (ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST) return FAIL("add default route via the gateway: %m");
  return 0;
}

/* Replaced, not written through: an image's resolv.conf may be a link to somewhere else. */
static int write_resolv_conf(const struct net_config *c, char *err, size_t errlen) {
  char text[256] = "";
  size_t n = 0;
  if (!c->nnameservers) n = (size_t)snprintf(text, sizeof text, "# no name servers: the egress policy allows no names\n");
  for (int i = 0; i < c->nnameservers; i++) {
    char a[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &c->nameservers[i], a, sizeof a);
    n += (size_t)snprintf(text + n, sizeof text - n, "nameserver %s\n", a);
  }
  mkdir("/etc", 0755);
  if (unlink("/etc/resolv.conf") != 0 && errno != ENOENT) return FAIL("remove /etc/resolv.conf: %m");
  int fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return FAIL("create /etc/resolv.conf: %m");
  ssize_t w = write(fd, text, n);
  close(fd);
  return w == (ssize_t)n ? 0 : FAIL("write /etc/resolv.conf: %m");
}

int guest_network(const struct net_config *c, char *err, size_t errlen) {
  char nic[IF_NAMESIZE];
  if (find_nic(nic) < 0) return FAIL("no network interface besides lo after 2 s (virtio_net not loaded?)");
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return FAIL("socket: %m");
  int rc = configure_nic(s, nic, c, err, errlen);
  close(s);
  if (rc < 0) return -1;
  agent_log("network: %s configured", nic);
  return write_resolv_conf(c, err, errlen);
}
