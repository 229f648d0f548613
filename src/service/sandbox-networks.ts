import { PrismError } from '../core/errors.js';
import type { Sandbox } from '../core/types.js';
import type { NetworkManager, NetworkTraffic } from '../net/network-manager.js';
import { needsNetwork } from '../net/policy.js';
import type { RuntimeDriver, TaskHandle, TaskSpec } from '../runtime/driver.js';
import type { Logger } from './logger.js';

/**
 * The node agent's side of per-sandbox networks: made before a task is created, linked after it runs
 * for drivers that keep their task's own namespace (docker), reattached or removed after a daemon
 * restart. Absent a NetworkManager (hosts without network support), sandboxes that need a network fail
 * to create and everything else is a no-op.
 */
export class SandboxNetworks {
  constructor(
    private readonly nodeId: string,
    private readonly log: Logger,
    private readonly net?: NetworkManager,
  ) {}

  /** The sandbox's address as the host reaches it, when it has a network on this node. */
  addressOf(id: string): string | undefined {
    return this.net?.get(id)?.address;
  }

  /** Bytes through the sandbox's link, when it has one on this node. */
  async traffic(id: string): Promise<NetworkTraffic | undefined> {
    return this.net?.traffic(id);
  }

  /**
   * Before create: the network the task joins. For a driver that keeps its task's own namespace
   * (capabilities().network 'own') everything but the link is made now, so that the task is created
   * with its name servers; `linkOwn` links it once the task runs.
   */
  async prepare(sb: Sandbox, driver: RuntimeDriver): Promise<TaskSpec['network']> {
    if (!needsNetwork(sb.network?.egress, sb.ports)) return undefined;
    if (!this.net) throw new PrismError('FAILED_PRECONDITION', `node ${this.nodeId} has no sandbox networking; only network egress 'none' without ports is possible here`);
    const own = driver.capabilities().network === 'own';
    const n = await this.net.setup(sb.id, sb.network?.egress ?? 'none', own ? { netns: 'later' } : {});
    return { netnsPath: n.netnsPath, nameservers: n.nameservers };
  }

  /** After a create or start of a task that keeps its own namespace: links that (new) namespace. */
  async linkOwn(sb: Sandbox, driver: RuntimeDriver, h: TaskHandle): Promise<void> {
    if (!this.net || driver.capabilities().network !== 'own' || !needsNetwork(sb.network?.egress, sb.ports)) return;
    if (!driver.taskNetns) throw new PrismError('INTERNAL', `the ${driver.name} driver keeps its own network namespace but cannot name it`);
    await this.net.setup(sb.id, sb.network?.egress ?? 'none', { netns: { path: await driver.taskNetns(h) } });
  }

  /** Removes the sandbox's network, if it has one. Idempotent. */
  async teardown(id: string): Promise<void> {
    await this.net?.teardown(id);
  }

  /**
   * After a daemon restart: reattaches the networks (DNS filters, rules) of `keep`, this node's
   * sandboxes, and removes every other network found. `task` gives a sandbox's handle and driver.
   */
  async recover(keep: Sandbox[], task: (id: string) => { h: TaskHandle; driver: RuntimeDriver } | undefined): Promise<void> {
    if (!this.net) return;
    const wanted = new Map(keep.filter((sb) => needsNetwork(sb.network?.egress, sb.ports)).map((sb) => [sb.id, sb]));
    for (const id of await this.net.listAttached().catch(() => [] as string[])) {
      const sb = wanted.get(id);
      if (sb) {
        await this.reattach(sb, task(id)).catch((e) => this.log.error({ err: e, sandbox: id }, 'reattaching the network failed'));
        continue;
      }
      this.log.warn({ sandbox: id }, 'removing the network of a sandbox unknown to this node');
      await this.net.teardown(id).catch((e) => this.log.error({ err: e, sandbox: id }, 'network orphan cleanup failed'));
    }
  }

  /** A task that keeps its own namespace is linked again if it runs, else when it starts. */
  private async reattach(sb: Sandbox, t: { h: TaskHandle; driver: RuntimeDriver } | undefined): Promise<void> {
    const egress = sb.network?.egress ?? 'none';
    if (!t || t.driver.capabilities().network !== 'own') {
      await this.net!.setup(sb.id, egress);
      return;
    }
    if ((await t.driver.inspect(t.h)) === 'running') await this.linkOwn(sb, t.driver, t.h);
    else await this.net!.setup(sb.id, egress, { netns: 'later' });
  }
}
