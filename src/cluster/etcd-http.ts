import { readFileSync } from 'node:fs';
import { Agent, fetch as undiciFetch } from 'undici';

/** PEM files of the cluster CA and this node's certificate: TLS between managed members and to them. */
export interface MemberTls {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/**
 * fetch for etcd's HTTP endpoints (/health, /version) and the cluster's join API: plain, or over TLS
 * trusting the cluster CA and presenting this node's certificate (members require client certificates).
 */
export function tlsFetch(tls: MemberTls | undefined): typeof fetch {
  if (!tls) return (input, init) => fetch(input, init);
  const dispatcher = new Agent({ connect: { ca: readFileSync(tls.caFile), cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) } });
  return ((input: string | URL | Request, init?: RequestInit) =>
    undiciFetch(input as string, { ...(init as object), dispatcher } as Parameters<typeof undiciFetch>[1])) as unknown as typeof fetch;
}
