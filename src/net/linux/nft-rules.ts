import { formatCidr, formatIpv4, type Cidr4, type ResolvedPolicy } from '../policy.js';

/**
 * nftables rulesets as text for `nft -f -`, built by pure functions so they can be unit-tested.
 * One table per daemon (`inet <table>`); every sandbox adds its own chains and sets, reached from the
 * base chains through verdict maps keyed by its host-side interface, so a sandbox is added or removed
 * without touching any other sandbox's rules. Every batch is applied atomically by nft.
 */

/** Never reachable from a sandbox, whatever its policy (beside the sandbox pool, added per table). */
export const NEVER_CIDRS = ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '240.0.0.0/4'];
/** Reachable only when a CIDR in `allow` names them (never through a resolved domain, nor with `all`). */
export const PRIVATE_CIDRS = ['10.0.0.0/8', '100.64.0.0/10', '172.16.0.0/12', '192.0.0.0/24', '192.168.0.0/16', '198.18.0.0/15'];

export interface SandboxRuleInput {
  table: string;
  /** Short key naming the sandbox's chains and sets (`[0-9a-f]{12}`). */
  key: string;
  /** Host-side interface name. */
  hostIf: string;
  address: string;
  gateway: string;
  policy: ResolvedPolicy;
  /** The sandbox may query the DNS filter on its gateway (udp/53). */
  dns: boolean;
}

const cidrs = (list: readonly Cidr4[]) => list.map(formatCidr);
const elements = (list: readonly string[]) => (list.length ? ` { ${list.join(', ')} }` : '');

/** Base table, sets and chains; safe to apply again (base rules are flushed and re-added in one batch). */
export function baseRuleset(table: string, pool: Cidr4): string {
  const t = `inet ${table}`;
  return [
    `add table ${t}`,
    `add set ${t} never { type ipv4_addr; flags interval; auto-merge; }`,
    `add set ${t} private { type ipv4_addr; flags interval; auto-merge; }`,
    `add set ${t} ifs { type ifname; }`,
    `add map ${t} from_sb { type ifname : verdict; }`,
    `add map ${t} in_sb { type ifname : verdict; }`,
    `add chain ${t} forward { type filter hook forward priority 0; policy accept; }`,
    `add chain ${t} input { type filter hook input priority 0; policy accept; }`,
    `add chain ${t} postrouting { type nat hook postrouting priority 100; policy accept; }`,
    `flush chain ${t} forward`,
    `flush chain ${t} input`,
    `flush chain ${t} postrouting`,
    `flush set ${t} never`,
    `flush set ${t} private`,
    `add element ${t} never { ${[...NEVER_CIDRS, formatCidr(pool)].join(', ')} }`,
    `add element ${t} private { ${PRIVATE_CIDRS.join(', ')} }`,
    // Packets a sandbox sends through the host: its own chain decides.
    `add rule ${t} forward iifname vmap @from_sb`,
    // Nothing opens connections into a sandbox through the host's forwarding (the host itself may).
    `add rule ${t} forward oifname @ifs ct state established,related accept`,
    `add rule ${t} forward oifname @ifs drop`,
    // Packets a sandbox sends to the host itself (any of its addresses): only DNS to its gateway.
    `add rule ${t} input iifname vmap @in_sb`,
    `add rule ${t} postrouting ip saddr ${formatCidr(pool)} ip daddr != ${formatCidr(pool)} masquerade`,
  ].join('\n') + '\n';
}

/** The egress chain of one sandbox: where packets it sends through the host may go. */
export function egressRules(r: SandboxRuleInput): string[] {
  const c = `rule inet ${r.table} o_${r.key}`;
  const head = [
    `add ${c} meta nfproto ipv6 drop`,
    // A spoofed source would escape the per-sandbox NAT and accounting.
    `add ${c} ip saddr != ${r.address} drop`,
    // Host DNAT rules (published container ports and the like) must not become a way to the host.
    `add ${c} ct status dnat drop`,
    `add ${c} ip daddr @never drop`,
  ];
  switch (r.policy.mode) {
    case 'none':
      return [...head, `add ${c} drop`];
    case 'all':
      return [...head, `add ${c} ip daddr @private drop`, `add ${c} accept`];
    case 'list':
      return [
        ...head,
        `add ${c} ip daddr @deny_${r.key} drop`,
        `add ${c} ip daddr @allowc_${r.key} accept`,
        // Names never open private ranges (DNS rebinding); only an explicit CIDR does.
        `add ${c} ip daddr @private drop`,
        `add ${c} ip daddr @allowd_${r.key} accept`,
        `add ${c} drop`,
      ];
  }
}

/** Adds (or re-applies) one sandbox's chains, sets and map entries. */
export function sandboxRuleset(r: SandboxRuleInput): string {
  const t = `inet ${r.table}`;
  const k = r.key;
  const input = [
    `add rule ${t} i_${k} ct state established,related accept`,
    ...(r.dns ? [`add rule ${t} i_${k} ip daddr ${r.gateway} udp dport 53 accept`] : []),
    `add rule ${t} i_${k} drop`,
  ];
  return [
    `add set ${t} deny_${k} { type ipv4_addr; flags interval; auto-merge; }`,
    `add set ${t} allowc_${k} { type ipv4_addr; flags interval; auto-merge; }`,
    `add set ${t} allowd_${k} { type ipv4_addr; flags timeout; }`,
    `add chain ${t} o_${k}`,
    `add chain ${t} i_${k}`,
    `flush chain ${t} o_${k}`,
    `flush chain ${t} i_${k}`,
    `flush set ${t} deny_${k}`,
    `flush set ${t} allowc_${k}`,
    ...(r.policy.denyCidrs.length ? [`add element ${t} deny_${k}${elements(cidrs(r.policy.denyCidrs))}`] : []),
    ...(r.policy.allowCidrs.length ? [`add element ${t} allowc_${k}${elements(cidrs(r.policy.allowCidrs))}`] : []),
    ...egressRules(r),
    ...input,
    `add element ${t} ifs { "${r.hostIf}" }`,
    `add element ${t} from_sb { "${r.hostIf}" : jump o_${k} }`,
    `add element ${t} in_sb { "${r.hostIf}" : jump i_${k} }`,
  ].join('\n') + '\n';
}

/** What a table holds, as read from `nft -j list table` (see {@link parseTableObjects}). */
export interface TableObjects {
  chains: Set<string>;
  /** Sets and maps, each with the keys it holds. */
  sets: Map<string, Set<string>>;
}

/** Reads the objects of a table from `nft -j list table inet <t>` output. */
export function parseTableObjects(json: string): TableObjects {
  const out: TableObjects = { chains: new Set(), sets: new Map() };
  const doc = JSON.parse(json) as { nftables?: Array<Record<string, { name?: string; elem?: unknown[] }>> };
  for (const o of doc.nftables ?? []) {
    if (o.chain?.name) out.chains.add(o.chain.name);
    const set = o.set ?? o.map;
    if (set?.name) {
      const keys = (set.elem ?? []).map((e) => (Array.isArray(e) ? e[0] : e)).filter((k): k is string => typeof k === 'string');
      out.sets.set(set.name, new Set(keys));
    }
  }
  return out;
}

/**
 * Removes one sandbox's rules: only what `present` shows, since deleting a missing object fails the
 * whole batch. Empty when there is nothing to remove.
 */
export function sandboxTeardown(table: string, key: string, hostIf: string, present: TableObjects): string {
  const t = `inet ${table}`;
  const lines: string[] = [];
  for (const m of ['from_sb', 'in_sb', 'ifs']) {
    if (present.sets.get(m)?.has(hostIf)) lines.push(`delete element ${t} ${m} { "${hostIf}" }`);
  }
  for (const c of [`o_${key}`, `i_${key}`]) {
    if (present.chains.has(c)) lines.push(`flush chain ${t} ${c}`, `delete chain ${t} ${c}`);
  }
  for (const s of [`deny_${key}`, `allowc_${key}`, `allowd_${key}`]) {
    if (present.sets.has(s)) lines.push(`delete set ${t} ${s}`);
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/**
 * Lets a sandbox reach addresses its DNS filter just resolved for an allowed name, for `ttlSec`.
 * Delete-then-add (after an add that makes the delete safe) renews the timeout of a known address.
 */
export function allowResolved(table: string, key: string, ips: readonly number[], ttlSec: number): string {
  const set = `inet ${table} allowd_${key}`;
  const list = ips.map(formatIpv4);
  return [
    `add element ${set} { ${list.join(', ')} }`,
    `delete element ${set} { ${list.join(', ')} }`,
    `add element ${set} { ${list.map((ip) => `${ip} timeout ${ttlSec}s`).join(', ')} }`,
  ].join('\n') + '\n';
}
