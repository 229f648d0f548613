import { isPrismError } from '../core/errors.js';
import { allocatable, type Reservation, type RuntimeName, type Sandbox } from '../core/types.js';
import { ClusterView } from '../scheduler/cluster-view.js';
import { hasRoom, placesHere, type PlacementStrategy } from '../scheduler/placement.js';
import type { Logger } from './logger.js';
import type { DirectTerms, SandboxRepo } from './sandbox-repo.js';

/** What decides whether a create may be made directly: the request with the node's defaults applied. */
export interface DirectShape {
  runtime: RuntimeName;
  cpus: number;
  memoryMb: number;
  diskMb: number;
  nodeSelector?: Record<string, string>;
  /** Volumes and snapshots tie a sandbox to the node holding them: such creates go to the scheduler. */
  volumes: boolean;
  snapshot: boolean;
}

/**
 * The node agent's half: makes the task, then writes the record, `running`, with the claim
 * (NodeAgent.createDirect). Undefined, with nothing made, when the image must be pulled first.
 */
export type MakeDirect = (sb: Sandbox, terms: DirectTerms) => Promise<Sandbox | undefined>;

export interface DirectCreateOptions {
  strategy: PlacementStrategy;
  /**
   * How far behind the strategy's first choice this node may be and still take a create itself, in
   * sandboxes of the request's memory (placement.ts placesHere).
   */
  slackSandboxes: number;
  /** This node's member key's revision as it last wrote it (Membership.memberRevision); the commit compares it. */
  memberRevision: () => number | undefined;
}

export const DEFAULT_DIRECT_SLACK_SANDBOXES = 16;
/**
 * The slack is at least this share of the node's memory: nodes that take creates from clients spread
 * over them differ by what each has in flight and not yet seen by the others, which grows with the load.
 */
const SLACK_SHARE = 0.1;

const ZERO: Reservation = { cpus: 0, memoryMb: 0, sandboxes: 0 };

/**
 * Direct creates: a node makes a sandbox it will run itself, in one store write. A create placed by the
 * scheduler writes the record three times (`pending` where it came in, `scheduled` by the leader,
 * `running` by the node that runs it; twice when it came in at the leader), and etcd's cost is per
 * record written (docs/benchmarks.md: ~0.3 ms of its CPU each, about a raw put). A direct create makes the
 * task first and then writes the record once, `running`, with its task handle and its name, in the same
 * commit that adds it to this node's reservation (ReservationLedger.claim, merged with the node's other
 * claims and releases): that commit is where capacity is checked, against the reservation as stored,
 * so a direct create never overcommits a node the scheduler is placing on at the same time. The commit
 * also compares this node's member key, so a node declared dead meanwhile (whose sandboxes the
 * scheduler marks `lost`) adds no `running` sandbox: its create fails UNAVAILABLE, its task destroyed.
 *
 * A node takes a create itself when the cluster's placement would put it here, within a slack
 * (placesHere): the sandbox fits, may run here (runtime, nodeSelector) and this node is about as free
 * (spread) or as full (binpack) as the strategy's first choice. Otherwise, and for sandboxes with
 * volumes or from a snapshot, or whose image this node would have to pull, the create goes to the
 * scheduler as before (where a pull shows as `starting`, and a failure as a `failed` record and event).
 * The view of the nodes is a ClusterView of this node's own (watches on node records, members and
 * reservations), plus the claims this node has in flight.
 *
 * What a user sees: the create returns `running` as before; no `pending` or `scheduled` record is
 * ever visible for it (a `created` lifecycle event, then `running`). A task made here whose record
 * could not be written is destroyed; one left by a crash between the two has no record and is
 * destroyed when the node starts again (NodeAgent.recover).
 */
export class DirectCreate {
  private view?: ClusterView;
  private inFlight: Reservation = ZERO;
  private stopped = false;
  /**
   * Creates made directly; those that found no room at their commit, and those whose image was not on
   * this node, which went to the scheduler.
   */
  readonly stats = { made: 0, noRoom: 0, pulls: 0 };

  constructor(
    private readonly repo: SandboxRepo,
    private readonly self: string,
    private readonly make: MakeDirect,
    private readonly log: Logger,
    private readonly opts: DirectCreateOptions,
  ) {}

  /** Starts the view of the nodes (watched from now). Until its first listing is in, every create goes to the scheduler. */
  async start(): Promise<void> {
    this.stopped = false;
    const view = new ClusterView(this.repo, () => undefined, (e) => {
      this.log.warn({ err: e }, 'direct creates: the view of the nodes stopped; starting it over');
      if (this.view === view && !this.stopped) void this.start().catch((err) => this.log.error({ err }, 'direct creates: restarting the view failed'));
    });
    this.view?.close();
    this.view = view;
    await view.start(await this.repo.revision());
  }

  stop(): void {
    this.stopped = true;
    this.view?.close();
    this.view = undefined;
  }

  /** Whether this node makes a create of this shape itself, as things stand now. */
  takes(shape: DirectShape): boolean {
    if (shape.volumes || shape.snapshot) return false;
    const nodes = this.view?.aliveNow();
    const me = nodes?.find((n) => n.id === this.self);
    if (!nodes || !me) return false;
    // This node counts with its own creates in flight (a burst through one node stops taking them itself
    // once it is the slack ahead); the others as stored, their own in flight unseen.
    const mine = { ...me, reserved: add(me.reserved, this.inFlight) };
    const req = { id: '', runtime: shape.runtime, cpus: shape.cpus, memoryMb: shape.memoryMb, diskMb: shape.diskMb, ...(shape.nodeSelector ? { nodeSelector: shape.nodeSelector } : {}) };
    const slackMb = Math.max(this.opts.slackSandboxes * shape.memoryMb, SLACK_SHARE * allocatable(me.capacity).memoryMb);
    return placesHere(req, nodes.map((n) => (n.id === this.self ? mine : n)), this.self, slackMb, { strategy: this.opts.strategy });
  }

  /**
   * Makes `sb` here (its node set to this one). Undefined when its image must be pulled first (nothing
   * was made), or when, at its commit, this node had no room left for it (its task is gone again): the
   * caller sends it to the scheduler instead.
   */
  async create(sb: Sandbox): Promise<Sandbox | undefined> {
    const capacity = this.view?.aliveNow()?.find((n) => n.id === this.self)?.capacity;
    if (!capacity) return undefined;
    const claim: Reservation = { cpus: sb.cpus, memoryMb: sb.memoryMb, sandboxes: 1 };
    this.inFlight = add(this.inFlight, claim);
    // Only the commit's own refusal sends the create on: a RESOURCE_EXHAUSTED of the driver is its answer.
    let refused = false;
    const fits = (after: Reservation) => {
      const ok = hasRoom(capacity, after);
      if (!ok) refused = true;
      return ok;
    };
    try {
      const made = await this.make({ ...sb, node: this.self }, { fits, memberRevision: this.opts.memberRevision });
      if (!made) {
        this.stats.pulls++;
        this.log.debug({ sandbox: sb.id, image: sb.image }, 'direct create: the image is not on this node; sent to the scheduler (a pull shows as starting)');
        return undefined;
      }
      this.stats.made++;
      return made;
    } catch (e) {
      if (!refused || !isPrismError(e, 'RESOURCE_EXHAUSTED')) throw e;
      this.stats.noRoom++;
      this.log.debug({ sandbox: sb.id }, 'direct create: no room left at its commit; sent to the scheduler');
      return undefined;
    } finally {
      this.inFlight = add(this.inFlight, { cpus: -claim.cpus, memoryMb: -claim.memoryMb, sandboxes: -1 });
    }
  }
}

function add(a: Reservation, b: Reservation): Reservation {
  return { cpus: a.cpus + b.cpus, memoryMb: a.memoryMb + b.memoryMb, sandboxes: a.sandboxes + b.sandboxes };
}
