import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError, asPrismError } from '../../core/errors.js';
import type { EgressPolicy } from '../../core/types.js';
import type { NetnsPlacement, NetworkManager, NetworkTraffic, SandboxNetwork, SetupOptions } from '../network-manager.js';
import { cidrContains, domainAllowed, formatIpv4, parseCidr, parseIpv4, resolvePolicy, type Cidr4, type ResolvedPolicy } from '../policy.js';
import { DnsFilter } from './dns-filter.js';
import { hostCommand } from './host-commands.js';
import { allowResolved, baseRuleset, parseTableObjects, sandboxRuleset, sandboxTeardown } from './nft-rules.js';

export interface NetworkLogger {
  info(o: object, msg?: string): void;
  warn(o: object, msg?: string): void;
  error(o: object, msg?: string): void;
}

export interface LinuxNetworkOptions {
  /** Owned by this manager: one `<sandbox-id>.json` per network, written before anything is made. */
  stateDir: string;
  /** nftables table (family inet) holding this daemon's rules; removed when its last network goes. */
  table: string;
  /** Private IPv4 pool; each sandbox takes a /30 of it (`--sandbox-cidr`). */
  pool: string;
  /** Resolver the DNS filters ask (`--sandbox-dns`), e.g. the host's own. */
  dnsUpstream: { host: string; port: number };
  logger?: NetworkLogger;
  /**
   * Where every daemon of this host claims the /30s it takes (one file per /30, named by its address,
   * made exclusively): two daemons on one pool never take the same one (default {@link HOST_CLAIMS}).
   */
  claimsDir?: string;
}

/** The host's claims on sandbox subnets, shared by every daemon (tmpfs: they go with a reboot, as the links do). */
export const HOST_CLAIMS = '/run/prism/net-claims';

/** Who holds a claim: the daemon (by its state dir) and the sandbox. */
interface Claim {
  stateDir: string;
  id: string;
}

interface NetState {
  id: string;
  key: string;
  index: number;
  egress: EgressPolicy;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Resolved addresses stay open at least this long (TTL 0 answers would otherwise close at once). */
const MIN_RESOLVED_TTL = 60;
const MAX_RESOLVED_TTL = 86_400;

/** `sb-<12 hex>` ids keep their hex; anything else is hashed, so names fit IFNAMSIZ (15). */
export function networkKey(id: string): string {
  const m = /^sb-([0-9a-f]{12})$/.exec(id);
  return m ? m[1]! : createHash('sha256').update(id).digest('hex').slice(0, 12);
}

/**
 * Per-sandbox networks with `ip` and `nft`: a named netns `prism-<id>`, a veth pair (`pv<key>` on the
 * host, `eth0` inside) on a /30 of the pool, NAT through the host, and the sandbox's chains in this
 * daemon's table. See docs/network.md for the rules and their limits.
 */
export class LinuxNetworkManager implements NetworkManager {
  private readonly pool: Cidr4;
  private readonly live = new Map<string, SandboxNetwork>();
  private readonly filters = new Map<string, DnsFilter>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: LinuxNetworkOptions) {
    const pool = parseCidr(opts.pool);
    if (!pool || pool.prefix > 28) throw new PrismError('INVALID_ARGUMENT', `--sandbox-cidr must be an IPv4 network of /28 or larger, got '${opts.pool}'`);
    if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(opts.table)) throw new PrismError('INVALID_ARGUMENT', `invalid nft table name '${opts.table}'`);
    this.pool = pool;
  }

  /** Every change runs alone: address allocation and the table's existence depend on all networks. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  get(sandboxId: string): SandboxNetwork | undefined {
    return this.live.get(sandboxId);
  }

  /**
   * The host end's counters, swapped: what the host end receives the sandbox sent. Read from sysfs
   * (two small files) rather than netlink or `ip -s`: the usage sampler asks for every sandbox every
   * few seconds. A sandbox set up `later` has no link until it is linked: no counters.
   */
  async traffic(sandboxId: string): Promise<NetworkTraffic | undefined> {
    if (!this.live.has(sandboxId)) return undefined;
    const dir = `/sys/class/net/pv${networkKey(sandboxId)}/statistics`;
    try {
      const [hostRx, hostTx] = await Promise.all([readFile(`${dir}/rx_bytes`, 'utf8'), readFile(`${dir}/tx_bytes`, 'utf8')]);
      return { rxBytes: Number(hostTx), txBytes: Number(hostRx) };
    } catch {
      return undefined; // not linked yet, or removed meanwhile
    }
  }

  async setup(sandboxId: string, egress: EgressPolicy, opts: SetupOptions = {}): Promise<SandboxNetwork> {
    if (!ID_RE.test(sandboxId)) throw new PrismError('INVALID_ARGUMENT', `invalid sandbox id ${JSON.stringify(sandboxId)}`);
    const placement = opts.netns;
    if (typeof placement === 'object' && !/^\/[A-Za-z0-9_./-]+$/.test(placement.path)) {
      throw new PrismError('INVALID_ARGUMENT', `invalid network namespace path ${JSON.stringify(placement.path)}`);
    }
    const policy = resolvePolicy(egress);
    return this.serial(async () => {
      let st = await this.readState(sandboxId);
      const fresh = !st;
      if (!st) {
        st = { id: sandboxId, key: networkKey(sandboxId), index: await this.allocate(sandboxId), egress };
        await this.writeState(st);
      } else {
        await this.reclaim(st);
      }
      try {
        return await this.apply({ ...st, egress }, policy, placement);
      } catch (e) {
        // A reattach that fails keeps the network of a sandbox that may still run; a new one goes.
        if (fresh) await this.remove(sandboxId).catch((te: unknown) => this.opts.logger?.error({ err: te, sandbox: sandboxId }, 'network cleanup after failed setup failed'));
        throw asPrismError(e, 'INTERNAL', `setting up the network of ${sandboxId}`);
      }
    });
  }

  private async apply(st: NetState, policy: ResolvedPolicy, placement: NetnsPlacement | undefined): Promise<SandboxNetwork> {
    const subnet = (this.pool.addr + st.index * 4) >>> 0;
    const gateway = formatIpv4(subnet + 1);
    const address = formatIpv4(subnet + 2);
    const hostIf = `pv${st.key}`;
    const dns = policy.mode === 'all' || policy.allowDomains.length > 0;
    // Rules first: the link never carries a packet that the policy has not seen.
    await hostCommand('nft', ['-f', '-'], baseRuleset(this.opts.table, this.pool) + sandboxRuleset({ table: this.opts.table, key: st.key, hostIf, address, gateway, policy, dns }));
    if (placement === undefined) await this.ensureLink(st.id, hostIf, gateway, address);
    else if (placement !== 'later') await this.linkInto(st.id, placement.path, hostIf, gateway, address);
    if (policy.mode !== 'none') await writeFile('/proc/sys/net/ipv4/ip_forward', '1');
    this.filters.get(st.id)?.close();
    this.filters.delete(st.id);
    // The filter listens on the gateway, the host end of the link: with no link yet, it starts with it.
    if (dns && placement !== 'later') {
      const filter = new DnsFilter({
        listen: gateway,
        upstream: this.opts.dnsUpstream,
        allows: (name) => policy.mode === 'all' || domainAllowed(name, policy.allowDomains),
        ...(policy.mode === 'list'
          ? { onResolved: (ips: number[], ttl: number) => this.allowIps(st.key, ips, ttl).then(() => undefined) }
          : {}),
        onError: (err) => this.opts.logger?.warn({ err, sandbox: st.id }, 'sandbox DNS filter error'),
      });
      await filter.start();
      this.filters.set(st.id, filter);
    }
    const net: SandboxNetwork = { sandboxId: st.id, netnsPath: `/run/netns/${netnsName(st.id)}`, address, gateway, nameservers: dns ? [gateway] : [] };
    this.live.set(st.id, net);
    return net;
  }

  private allowIps(key: string, ips: number[], ttl: number): Promise<string> {
    const t = Math.min(MAX_RESOLVED_TTL, Math.max(MIN_RESOLVED_TTL, ttl));
    return hostCommand('nft', ['-f', '-'], allowResolved(this.opts.table, key, ips, t));
  }

  /** The netns and veth, made whole: a half-made pair from a crash is replaced. */
  private async ensureLink(id: string, hostIf: string, gateway: string, address: string): Promise<void> {
    const ns = netnsName(id);
    if (existsSync(`/run/netns/${ns}`) && existsSync(`/sys/class/net/${hostIf}`)) return;
    await this.removeLink(id, hostIf);
    await this.makeVeth(ns, hostIf, gateway, address, [`netns add ${ns}`]);
  }

  /**
   * The veth into a namespace the task made (see NetnsPlacement): named `prism-<id>` by a bind mount,
   * so that teardown, the port proxy and a reattach find it as they find one of ours. A namespace
   * already named and linked is kept when it is the same one (a daemon restart).
   */
  private async linkInto(id: string, path: string, hostIf: string, gateway: string, address: string): Promise<void> {
    const ns = netnsName(id);
    const named = `/run/netns/${ns}`;
    if (existsSync(named) && existsSync(`/sys/class/net/${hostIf}`) && sameFile(named, path)) return;
    await this.removeLink(id, hostIf);
    await mkdir('/run/netns', { recursive: true });
    await writeFile(named, '', { flag: 'wx' });
    try {
      await hostCommand('mount', ['--bind', path, named]);
    } catch (e) {
      await rm(named, { force: true });
      throw e;
    }
    await this.makeVeth(ns, hostIf, gateway, address);
  }

  private async makeVeth(ns: string, hostIf: string, gateway: string, address: string, first: string[] = []): Promise<void> {
    await hostCommand('ip', ['-b', '-'], [
      ...first,
      `link add ${hostIf} type veth peer name eth0 netns ${ns}`,
      `addr add ${gateway}/30 dev ${hostIf}`,
      `link set ${hostIf} up`,
    ].join('\n') + '\n');
    await hostCommand('ip', ['-n', ns, '-b', '-'], [
      `addr add ${address}/30 dev eth0`,
      'link set eth0 up',
      'link set lo up',
      `route add default via ${gateway}`,
    ].join('\n') + '\n');
  }

  private async removeLink(id: string, hostIf: string): Promise<void> {
    const ns = netnsName(id);
    // Deleting the namespace takes the veth's inside end, and with it the host end.
    if (existsSync(`/run/netns/${ns}`)) await hostCommand('ip', ['netns', 'delete', ns]);
    // The kernel removes that host end asynchronously: it may vanish between the check and the delete.
    if (existsSync(`/sys/class/net/${hostIf}`)) {
      await hostCommand('ip', ['link', 'delete', hostIf]).catch((e: unknown) => {
        if (existsSync(`/sys/class/net/${hostIf}`)) throw e;
      });
    }
  }

  teardown(sandboxId: string): Promise<void> {
    if (!ID_RE.test(sandboxId)) return Promise.reject(new PrismError('INVALID_ARGUMENT', `invalid sandbox id ${JSON.stringify(sandboxId)}`));
    // Every delete comes here, most for sandboxes that never had a network (the state file is written
    // before anything else): those must not need nft, nor wait in line behind other networks' work.
    // (A sandbox's own setup and teardown never overlap: the node agent holds its lock for either.)
    if (!this.mayHaveNetwork(sandboxId)) return Promise.resolve();
    return this.serial(() => this.remove(sandboxId));
  }

  private mayHaveNetwork(id: string): boolean {
    return existsSync(this.statePath(id)) || existsSync(`/run/netns/${netnsName(id)}`) || existsSync(`/sys/class/net/pv${networkKey(id)}`);
  }

  private async remove(id: string): Promise<void> {
    const st = await this.readState(id);
    const key = st?.key ?? networkKey(id);
    const hostIf = `pv${key}`;
    if (!st && !existsSync(`/run/netns/${netnsName(id)}`) && !existsSync(`/sys/class/net/${hostIf}`)) return;
    this.filters.get(id)?.close();
    this.filters.delete(id);
    this.live.delete(id);
    await this.removeLink(id, hostIf);
    const table = await this.listTable();
    if (table) {
      const batch = sandboxTeardown(this.opts.table, key, hostIf, table);
      if (batch) await hostCommand('nft', ['-f', '-'], batch);
    }
    await rm(this.statePath(id), { force: true });
    if (st) await this.unclaim(st);
    // The table goes with the last network, so a host without sandboxes carries no Prism rules.
    if (table && (await this.listAttached()).length === 0) await hostCommand('nft', ['delete', 'table', 'inet', this.opts.table]).catch(() => undefined);
  }

  private async listTable() {
    try {
      return parseTableObjects(await hostCommand('nft', ['-j', 'list', 'table', 'inet', this.opts.table]));
    } catch (e) {
      if (e instanceof PrismError && /No such file or directory/.test(e.message)) return undefined;
      throw e;
    }
  }

  async listAttached(): Promise<string[]> {
    const files = await readdir(this.opts.stateDir).catch(() => [] as string[]);
    return files.filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
  }

  async close(): Promise<void> {
    for (const f of this.filters.values()) f.close();
    this.filters.clear();
  }

  /**
   * The lowest free /30 for sandbox `id`: not taken by a network of ours, nor by any address on this
   * host, nor claimed by another daemon of this host (a claim is made before the address is set up,
   * so two daemons allocating at the same moment cannot both take one), and claimed here.
   */
  private async allocate(id: string): Promise<number> {
    const used = new Set<number>();
    for (const other of await this.listAttached()) {
      const st = await this.readState(other);
      if (st) used.add(st.index);
    }
    const hostAddrs = await hostAddresses();
    const slots = 2 ** (32 - this.pool.prefix) / 4;
    for (let i = 0; i < slots; i++) {
      if (used.has(i)) continue;
      const subnet: Cidr4 = { addr: (this.pool.addr + i * 4) >>> 0, prefix: 30 };
      if (hostAddrs.some((a) => cidrContains(subnet, a))) continue;
      if (await this.claim(i, id)) return i;
    }
    throw new PrismError('RESOURCE_EXHAUSTED', `no free address in the sandbox pool ${this.opts.pool}`);
  }

  private claimPath(index: number): string {
    return join(this.opts.claimsDir ?? HOST_CLAIMS, formatIpv4((this.pool.addr + index * 4) >>> 0));
  }

  /**
   * Claims /30 `index` for sandbox `id`; false when another daemon holds it. A claim of this daemon's
   * with no network state of ours behind it is stale (a crash between the claim and the state file, or
   * a network removed while the claim could not be): it is taken over. Another daemon's claim is never
   * taken (it may be setting that network up right now): a stale one of theirs costs one /30 until
   * that daemon removes its network or the host reboots.
   */
  private async claim(index: number, id: string): Promise<boolean> {
    const path = this.claimPath(index);
    const mine: Claim = { stateDir: this.opts.stateDir, id };
    await mkdir(this.opts.claimsDir ?? HOST_CLAIMS, { recursive: true, mode: 0o700 });
    try {
      await writeFile(path, JSON.stringify(mine), { flag: 'wx' });
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const held = await this.readClaim(path);
    if (held?.stateDir !== this.opts.stateDir) return false;
    if (held.id !== id && existsSync(this.statePath(held.id))) return false;
    await writeFile(path, JSON.stringify(mine));
    return true;
  }

  /** A network set up again (a restart, after a reboot): its claim made again when it is gone. */
  private async reclaim(st: NetState): Promise<void> {
    const held = await this.readClaim(this.claimPath(st.index));
    if (held?.stateDir === this.opts.stateDir && held.id === st.id) return;
    if (held) {
      this.opts.logger?.warn({ sandbox: st.id, claim: this.claimPath(st.index), holder: held }, 'the address of this sandbox network is claimed by another daemon of this host');
      return;
    }
    await this.claim(st.index, st.id);
  }

  /** Drops the claim of a network removed here (only ours: a claim another daemon took over stays). */
  private async unclaim(st: NetState): Promise<void> {
    const path = this.claimPath(st.index);
    const held = await this.readClaim(path);
    if (held?.stateDir === this.opts.stateDir && held.id === st.id) await rm(path, { force: true });
  }

  private async readClaim(path: string): Promise<Claim | undefined> {
    try {
      return JSON.parse(await readFile(path, 'utf8')) as Claim;
    } catch {
      return undefined;
    }
  }

  private statePath(id: string): string {
    return join(this.opts.stateDir, `${id}.json`);
  }

  private async readState(id: string): Promise<NetState | undefined> {
    try {
      return JSON.parse(await readFile(this.statePath(id), 'utf8')) as NetState;
    } catch {
      return undefined;
    }
  }

  private async writeState(st: NetState): Promise<void> {
    await mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
    const file = this.statePath(st.id);
    await writeFile(`${file}.tmp`, JSON.stringify(st));
    await rename(`${file}.tmp`, file);
  }
}

export function netnsName(id: string): string {
  return `prism-${id}`;
}

async function hostAddresses(): Promise<number[]> {
  const out = JSON.parse(await hostCommand('ip', ['-j', '-4', 'addr', 'show'])) as Array<{ addr_info?: Array<{ local?: string }> }>;
  return out.flatMap((l) => (l.addr_info ?? []).map((a) => parseIpv4(a.local ?? '')).filter((n): n is number => n !== undefined));
}

/** Whether two paths are the same file (two names of one network namespace compare equal). */
function sameFile(a: string, b: string): boolean {
  try {
    const x = statSync(a);
    const y = statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}
