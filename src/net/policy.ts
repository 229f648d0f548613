import { PrismError } from '../core/errors.js';
import type { EgressPolicy } from '../core/types.js';

/** Most entries in `allow` or `deny`: each becomes set elements, and names a DNS filter entry. */
export const MAX_POLICY_ENTRIES = 256;

/** An IPv4 network: `addr` is the network address as an unsigned 32-bit number. */
export interface Cidr4 {
  addr: number;
  prefix: number;
}

/** A policy checked and split into what the rules and the DNS filter need. */
export interface ResolvedPolicy {
  mode: 'none' | 'all' | 'list';
  allowCidrs: Cidr4[];
  /** Lowercase names without a trailing dot; `*.example.com` allows every subdomain (not the apex). */
  allowDomains: string[];
  denyCidrs: Cidr4[];
}

const DOMAIN_RE = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function parseIpv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

/** `a.b.c.d` or `a.b.c.d/n`; host bits must be zero so that a typo is not silently widened. */
export function parseCidr(s: string): Cidr4 | undefined {
  const [ip, len, extra] = s.split('/');
  if (extra !== undefined) return undefined;
  const addr = parseIpv4(ip ?? '');
  const prefix = len === undefined ? 32 : /^\d{1,2}$/.test(len) ? Number(len) : NaN;
  if (addr === undefined || !(prefix >= 0 && prefix <= 32)) return undefined;
  if ((addr & ~maskOf(prefix)) >>> 0 !== 0) return undefined;
  return { addr, prefix };
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function formatCidr(c: Cidr4): string {
  return `${formatIpv4(c.addr)}/${c.prefix}`;
}

export function cidrContains(outer: Cidr4, ip: number): boolean {
  return ((ip & maskOf(outer.prefix)) >>> 0) === outer.addr;
}

/** True when `name` (lowercase, no trailing dot) is allowed by `patterns`. */
export function domainAllowed(name: string, patterns: readonly string[]): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  return patterns.some((p) => (p.startsWith('*.') ? n.endsWith(p.slice(1)) && n.length > p.length - 1 : n === p));
}

/**
 * Checks a policy as given on create and splits it. Throws INVALID_ARGUMENT naming the bad entry.
 * IPv6 entries are refused: sandboxes get IPv4 only (docs/network.md).
 */
export function resolvePolicy(egress: EgressPolicy): ResolvedPolicy {
  if (egress === 'none' || egress === 'all') return { mode: egress, allowCidrs: [], allowDomains: [], denyCidrs: [] };
  const out: ResolvedPolicy = { mode: 'list', allowCidrs: [], allowDomains: [], denyCidrs: [] };
  if (egress.allow.length > MAX_POLICY_ENTRIES || egress.deny.length > MAX_POLICY_ENTRIES) {
    throw new PrismError('INVALID_ARGUMENT', `network.egress allow and deny take at most ${MAX_POLICY_ENTRIES} entries each`);
  }
  for (const raw of egress.allow) {
    const entry = raw.trim().toLowerCase();
    const cidr = parseCidr(entry);
    if (cidr) out.allowCidrs.push(cidr);
    else if (entry.includes(':')) throw new PrismError('INVALID_ARGUMENT', `network.egress.allow: IPv6 is not supported (sandboxes get IPv4 only): '${raw}'`);
    else if (/^[\d./]+$/.test(entry) || !DOMAIN_RE.test(entry.replace(/\.$/, '')) || entry.length > 253) {
      throw new PrismError('INVALID_ARGUMENT', `network.egress.allow: '${raw}' is neither an IPv4 CIDR (host bits zero) nor a domain name`);
    } else out.allowDomains.push(entry.replace(/\.$/, ''));
  }
  for (const raw of egress.deny) {
    const cidr = parseCidr(raw.trim());
    if (!cidr) throw new PrismError('INVALID_ARGUMENT', `network.egress.deny: '${raw}' is not an IPv4 CIDR (deny takes addresses only)`);
    out.denyCidrs.push(cidr);
  }
  return out;
}

/** Whether a sandbox needs a network namespace of its own (anything beyond `lo`). */
export function needsNetwork(egress: EgressPolicy | undefined, ports: readonly number[] | undefined): boolean {
  return (egress !== undefined && egress !== 'none') || (ports?.length ?? 0) > 0;
}
