import type { EgressPolicy } from '../core/types.js';

/** What a sandbox's task needs to join its network, and where the host reaches it. */
export interface SandboxNetwork {
  sandboxId: string;
  /** A network namespace file (`/run/netns/...`) the task joins instead of making its own. */
  netnsPath: string;
  /** The sandbox's IPv4 address (host side connects to it, e.g. the port proxy). */
  address: string;
  /** The host end of the link: the sandbox's default gateway. Never reachable from the sandbox but for DNS. */
  gateway: string;
  /** Name servers for the sandbox's /etc/resolv.conf; empty when the sandbox resolves nothing. */
  nameservers: string[];
}

/**
 * Where the sandbox's end of the link goes.
 * - absent: a namespace the manager makes, `/run/netns/prism-<id>`, which the task joins (oci, microvm).
 * - `{ path }`: a namespace the task made itself (a Docker container's, `/proc/<pid>/ns/net`), for
 *   engines that cannot join one by path. The manager names it `prism-<id>` (a bind mount, as
 *   `ip netns attach` does) and links it. Called again with another namespace (the container was
 *   restarted and got a new one), the link moves there with the same address.
 * - `'later'`: that namespace does not exist yet: allocate the address, apply the rules and start
 *   the DNS filter now (so the task can be created with its name servers), link on a later setup
 *   that names the path. Until then nothing can reach or leave the sandbox.
 */
export type NetnsPlacement = { path: string } | 'later';

/** Bytes through a sandbox's link since it was made, as the sandbox sees them (counters). */
export interface NetworkTraffic {
  /** Bytes the sandbox received (into its `eth0`). */
  rxBytes: number;
  /** Bytes the sandbox sent. */
  txBytes: number;
}

export interface SetupOptions {
  netns?: NetnsPlacement;
}

/**
 * The network seam: per-sandbox network namespaces and the egress policy around them. Drivers only
 * join the namespace they are given; everything on the host side (links, addresses, NAT, filter
 * rules, the DNS filter) belongs to the NetworkManager.
 *
 * Contract:
 * - `setup` prepares the sandbox's namespace and enforces `egress` before it resolves. It is
 *   idempotent and is also how a restarted daemon reattaches: called again for a sandbox that has a
 *   network it re-applies the rules and restarts its DNS filter, keeping the address. If it fails it
 *   throws a PrismError and leaves nothing of that sandbox behind.
 * - Whatever the policy, a sandbox can never open connections to the host's own addresses (but the
 *   DNS filter on its gateway), link-local addresses (169.254.169.254), loopback, other sandboxes, or
 *   private ranges it was not explicitly allowed. The host may connect into the sandbox.
 * - `netnsPath` of the result is always `/run/netns/prism-<id>`, whichever placement: with `{ path }`
 *   it names the task's own namespace once linked.
 * - `teardown` removes everything `setup` made for the sandbox. Idempotent; unknown ids succeed.
 * - `listAttached` lists every sandbox this manager holds resources for on this host, whether or not
 *   setup finished, so the daemon can tear down networks of sandboxes the Store does not know.
 * - `traffic` reads the byte counters of the sandbox's link (one per sandbox, on the host, whatever
 *   the runtime: a microVM's tap sits behind the same link). They start at 0 when the link is made,
 *   so they restart when it is made again (a docker task's new namespace after a start). Undefined
 *   when the sandbox has no network linked in this process (none, not yet linked, torn down).
 * - `close` stops the DNS filters (daemon shutdown); namespaces and rules stay for the next start.
 * Errors: INVALID_ARGUMENT (bad policy or id), RESOURCE_EXHAUSTED (address pool full),
 * FAILED_PRECONDITION (a missing tool or kernel feature), INTERNAL.
 */
export interface NetworkManager {
  setup(sandboxId: string, egress: EgressPolicy, opts?: SetupOptions): Promise<SandboxNetwork>;
  teardown(sandboxId: string): Promise<void>;
  listAttached(): Promise<string[]>;
  /** The network of a sandbox set up (or reattached) by this process, if any. */
  get(sandboxId: string): SandboxNetwork | undefined;
  traffic(sandboxId: string): Promise<NetworkTraffic | undefined>;
  close(): Promise<void>;
}
