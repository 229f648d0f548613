import type { Logger } from '../service/logger.js';
import type { EtcdMemberInfo } from './members.js';
import { voterEndpoints } from './join-service.js';

/**
 * Keeps `<data-dir>/cluster.json`'s store endpoints in step with the etcd member list while prismd
 * runs: every `intervalMs`, and at once after a membership change this node made (a promote, a
 * removal). A node learns the endpoints when it joins; without this, one that restarts after the
 * members it knew were all replaced could not find its cluster.
 *
 * The running store keeps the endpoints it connected with: etcd3's client takes its hosts once, in
 * its constructor (1.1.2 has no way to change them), so the refreshed list serves the next start.
 */
export class EndpointRefresh {
  #timer: NodeJS.Timeout | undefined;
  /** Refreshes run one after another, so the last to finish saw the latest change. */
  #chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly listMembers: () => Promise<EtcdMemberInfo[]>,
    private readonly save: (endpoints: string[]) => void,
    private readonly log: Logger,
    private readonly intervalMs = 30_000,
  ) {}

  /** Starts the periodic refresh; `stop` ends it. */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.now(), this.intervalMs);
    this.#timer.unref();
  }

  /** Lists the members and saves the voting members' client URLs; never throws (the store may be down). */
  now(): Promise<void> {
    this.#chain = this.#chain.then(async () => {
      try {
        const endpoints = voterEndpoints(await this.listMembers());
        if (endpoints.length > 0) this.save([...endpoints].sort());
      } catch (err) {
        this.log.debug({ err }, 'could not list the etcd members to refresh the saved store endpoints; trying again later');
      }
    });
    return this.#chain;
  }

  /** Ends the periodic refresh and waits for one under way. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#chain;
  }
}
