/* The `N` payload parser: a pure function, unit-tested in agent-test.c. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "net-config.h"

static char *field(char **cur, char *end) {
  if (*cur >= end) return NULL;
  char *f = *cur, *nul = memchr(f, 0, (size_t)(end - f));
  if (!nul) return NULL;
  *cur = nul + 1;
  return f;
}

static long number(const char *s, long lo, long hi) {
  if (!s || !s[0] || strlen(s) > 5 || s[strspn(s, "0123456789")]) return -1;
  long v = strtol(s, NULL, 10);
  return v >= lo && v <= hi ? v : -1;
}

const char *net_config_parse(char *p, uint32_t len, struct net_config *c) {
  memset(c, 0, sizeof *c);
  char *cur = p, *end = p + len;
  char *addr = field(&cur, end), *gw = field(&cur, end), *mtu = field(&cur, end);
  if (!addr || !gw || !mtu) return "want address/prefix, gateway, MTU[, name servers], NUL-terminated";
  char *slash = strchr(addr, '/');
  if (!slash) return "address without /prefix";
  *slash = 0;
  long prefix = number(slash + 1, 1, 32), m = number(mtu, 68, 65535);
  if (inet_pton(AF_INET, addr, &c->address) != 1 || prefix < 0) return "bad address/prefix";
  if (inet_pton(AF_INET, gw, &c->gateway) != 1) return "bad gateway";
  if (m < 0) return "bad MTU";
  c->prefix = (unsigned)prefix;
  c->mtu = (unsigned)m;
  for (char *ns; (ns = field(&cur, end));) {
    if (c->nnameservers == MAX_NAMESERVERS) return "too many name servers";
    if (inet_pton(AF_INET, ns, &c->nameservers[c->nnameservers++]) != 1) return "bad name server";
  }
  return cur == end ? NULL : "trailing bytes";
}
