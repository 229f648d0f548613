import { isPrismError } from '../core/errors.js';
import type { Lease, Watch } from '../store/store.js';
import type { Logger } from './logger.js';
import type { SandboxRepo } from './sandbox-repo.js';

export interface MembershipOptions {
  /** Lease TTL: a node that stops renewing for this long is dead. */
  ttlMs: number;
  /** Take part in leader elections (every node does unless told otherwise). */
  campaign: boolean;
}

/**
 * This node's membership in the cluster, resting on one Store lease: the member key (the node is alive
 * while it exists) and, when elected, the leader key are both held under it. The lease is renewed at a
 * third of its TTL. Leader election is etcd's usual recipe: create the leader key only if absent, under
 * our lease; its modRevision is our term, and the scheduler's transactions check that revision, so a
 * deposed leader cannot place anything even before it notices.
 *
 * If the lease is lost (a partition longer than the TTL), the node grants a new one, announces itself
 * again and calls `onRejoin` so that the agent reconciles sandboxes the cluster marked lost meanwhile.
 */
export class Membership {
  private lease?: Lease;
  /** The member key's revision as last written here; undefined until joined and once the lease ran out. */
  private memberRev?: number;
  private term?: number;
  private timer?: NodeJS.Timeout;
  private leaderWatch?: Watch;
  /** A leader watch is open or being opened (its start revision is read first). */
  private watchingLeader = false;
  /** Bumped per leader watch opened, so a slow start of an older one does not replace a newer one. */
  private leaderWatchGeneration = 0;
  private lastRenewal = 0;
  /** The leading node as last seen from here (the leader key's value); undefined when none is known. */
  private leaderNode?: string;
  private stopped = false;
  private busy = false;

  onElected: (term: number) => void = () => undefined;
  onDeposed: () => void = () => undefined;
  onRejoin: () => void = () => undefined;

  constructor(
    private readonly nodeId: string,
    private readonly address: () => string,
    private readonly repo: SandboxRepo,
    private readonly log: Logger,
    private readonly opts: MembershipOptions,
  ) {}

  /** The current term when this node leads, else undefined. */
  leaderTerm(): number | undefined {
    return this.term;
  }

  /**
   * The node that leads the scheduling as this node last saw it (its own id while it leads), from the
   * leader watch and the followers' check each tick: no store read. Undefined when none is known.
   */
  leader(): string | undefined {
    return this.term !== undefined ? this.nodeId : this.leaderNode;
  }

  async start(): Promise<void> {
    await this.join();
    this.timer = setInterval(() => void this.tick(), Math.max(200, Math.floor(this.opts.ttlMs / 3)));
    this.timer.unref();
    if (this.opts.campaign) await this.runForLeader();
  }

  /**
   * The revision of this node's member key as this node last wrote it (direct creates compare it in their
   * commit); undefined when not known (not joined yet, or the lease ran out and rejoining is under way).
   */
  memberRevision(): number | undefined {
    return this.memberRev;
  }

  private async join(): Promise<void> {
    this.lease = await this.repo.grantLease(this.opts.ttlMs);
    this.memberRev = await this.repo.putMember(this.nodeId, this.address(), this.lease);
    this.lastRenewal = Date.now();
  }

  /** Re-announces the address (after the API bound a port). */
  async announce(): Promise<void> {
    if (this.lease) this.memberRev = await this.repo.putMember(this.nodeId, this.address(), this.lease);
  }

  private async tick(): Promise<void> {
    if (this.busy || this.stopped || !this.lease) return;
    this.busy = true;
    try {
      await this.lease.keepAlive();
      this.lastRenewal = Date.now();
      if (this.opts.campaign && this.term === undefined) await this.checkLeader();
    } catch (e) {
      if (isPrismError(e, 'NOT_FOUND')) {
        this.log.warn({ node: this.nodeId }, 'membership lease expired: rejoining the cluster');
        this.memberRev = undefined;
        this.depose();
        await this.join().then(() => this.onRejoin(), (err) => this.log.warn({ err }, 'rejoining failed; retrying'));
        if (this.opts.campaign) await this.runForLeader();
      } else {
        this.log.warn({ err: e }, 'renewing the membership lease failed');
        // Past the TTL the cluster may have elected someone else: stop acting as leader.
        if (Date.now() - this.lastRenewal > this.opts.ttlMs) this.depose();
      }
    } finally {
      this.busy = false;
    }
  }

  /**
   * A follower's check each tick, behind the leader watch (which starts from a revision read after a
   * lost campaign, so it can miss a key deleted just before): one read, and a campaign only when nobody
   * leads. A lost campaign is a write that etcd still puts through raft; every follower used to make
   * one a tick, and open a new leader watch each time.
   */
  private async checkLeader(): Promise<void> {
    const cur = await this.repo.leader().catch((e: unknown) => {
      this.log.warn({ err: e }, 'reading the leader key failed; retrying');
      return null;
    });
    if (cur === null) return;
    this.leaderNode = cur?.node;
    if (!cur || cur.node === this.nodeId) await this.runForLeader();
    else if (!this.watchingLeader) this.watchLeader();
  }

  private async runForLeader(): Promise<void> {
    if (this.stopped || !this.lease || this.term !== undefined) return;
    try {
      let term = await this.repo.campaign(this.nodeId, this.lease);
      if (term === undefined) {
        const cur = await this.repo.leader();
        // Our own previous incarnation (a restart within the TTL): the data dir's pid lock says it is
        // gone, so take the key over instead of waiting for its lease to run out.
        if (cur?.node === this.nodeId) term = await this.repo.takeOverLeadership(this.nodeId, this.lease, cur.revision);
        else this.leaderNode = cur?.node;
      }
      if (term === undefined) {
        if (!this.watchingLeader) this.watchLeader();
        return;
      }
      this.term = term;
      this.log.info({ node: this.nodeId, term }, 'elected scheduler leader');
      this.watchLeader();
      this.onElected(term);
    } catch (e) {
      this.log.warn({ err: e }, 'leader campaign failed; retrying');
    }
  }

  /** Campaigns as soon as the leader key disappears; steps down if someone else's key replaces ours. */
  private watchLeader(): void {
    this.watchingLeader = true;
    this.leaderWatch?.close();
    this.leaderWatch = undefined;
    const generation = ++this.leaderWatchGeneration;
    void this.repo.revision().then((rev) => {
      if (this.stopped || generation !== this.leaderWatchGeneration) return;
      this.leaderWatch = this.repo.watchLeader(rev, (leader) => {
        this.leaderNode = leader;
        if (leader === undefined) {
          if (this.term !== undefined) this.depose();
          void this.runForLeader();
        } else if (leader !== this.nodeId && this.term !== undefined) {
          this.depose();
        }
      }, () => this.watchLeader());
    }, () => {
      if (generation === this.leaderWatchGeneration) this.watchingLeader = false;
    });
  }

  private depose(): void {
    if (this.term === undefined) return;
    this.log.warn({ node: this.nodeId, term: this.term }, 'no longer the scheduler leader');
    this.term = undefined;
    this.onDeposed();
  }

  /**
   * Leaves: stops renewing and revokes the lease, so the node counts as gone at once. A store that does
   * not answer within `boundMs` (its quorum lost) is not waited for: the lease then runs out after its
   * TTL, as after a crash, and shutting down does not hang on the store's retries.
   */
  async stop(boundMs = 3000): Promise<void> {
    this.halt();
    const revoked = this.lease?.revoke().catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([revoked, new Promise<void>((r) => (timer = setTimeout(r, boundMs)))]);
    clearTimeout(timer);
  }

  /** Stops renewing without leaving (as a crash would): the lease runs out after its TTL. */
  halt(): void {
    this.stopped = true;
    clearInterval(this.timer);
    this.leaderWatch?.close();
    this.depose();
  }
}
