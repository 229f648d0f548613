import { allocatable, type NodeCapacity, type Reservation, type RuntimeName } from '../core/types.js';

/**
 * Placement as a pure function: cluster state in, decisions out. A request must fit in what the node
 * offers minus what placement already reserved there: its capacity times its own overcommit factors
 * (NodeCapacity: CPU 4x by default, memory 1x), so an operator who knows the sandboxes idle can pack
 * more of them; a sandbox's `cpus` and `memoryMb` stay its hard limits either way, and no single
 * sandbox may ask for more than the node has. A batch is placed one request after another against a
 * running tally, so a burst never overcommits a node even before anything is written.
 *
 * Disk: a sandbox's writable layer is a sparse file that grows up to its `diskMb`, so disk is not
 * reserved (that would refuse hosts whose sandboxes write little); instead a node qualifies only while
 * its last reported free disk covers the request plus what this batch already put there. A node full
 * of data stops taking sandboxes that could not write their whole layer.
 */
export interface PlacementRequest {
  id: string;
  runtime: RuntimeName;
  cpus: number;
  memoryMb: number;
  /** Size of the writable layer; 0 or absent when unknown. */
  diskMb?: number;
  /** Only nodes carrying all of these labels qualify. */
  nodeSelector?: Record<string, string>;
  /** Only this node qualifies: it holds the sandbox's volumes (volumes are node-local). */
  node?: string;
}

/** An alive node as placement sees it. */
export interface PlacementNode {
  id: string;
  name: string;
  runtimes: RuntimeName[];
  labels: Record<string, string>;
  capacity: NodeCapacity;
  reserved: Reservation;
  /** Free disk of the node's data dir at its last report, in MiB; absent when not reported yet. */
  diskFreeMb?: number;
}

export type PlacementStrategy = 'spread' | 'binpack';

export interface PlacementOptions {
  /** spread: the node with the most free memory; binpack: the fullest node that still fits. */
  strategy: PlacementStrategy;
}

export const defaultPlacementOptions: PlacementOptions = { strategy: 'spread' };


export type PlacementDecision = { node: string } | { error: { code: 'RESOURCE_EXHAUSTED' | 'FAILED_PRECONDITION'; message: string } };

export interface BatchPlacement {
  decisions: Map<string, PlacementDecision>;
  /** Each touched node's reservation after the batch. */
  reserved: Map<string, Reservation>;
}

function matches(labels: Record<string, string>, selector: Record<string, string> | undefined): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}

export function placeBatch(reqs: PlacementRequest[], nodes: PlacementNode[], opts: PlacementOptions = defaultPlacementOptions): BatchPlacement {
  const reserved = new Map<string, Reservation>();
  const tally = (n: PlacementNode) => reserved.get(n.id) ?? n.reserved;
  const diskPlaced = new Map<string, number>();
  const diskFree = (n: PlacementNode) => (n.diskFreeMb === undefined ? Infinity : n.diskFreeMb - (diskPlaced.get(n.id) ?? 0));
  const decisions = new Map<string, PlacementDecision>();
  for (const req of reqs) {
    const d = placeOne(req, nodes, tally, diskFree, opts);
    decisions.set(req.id, d);
    if ('node' in d) {
      const n = nodes.find((x) => x.id === d.node)!;
      const r = tally(n);
      reserved.set(n.id, { cpus: r.cpus + req.cpus, memoryMb: r.memoryMb + req.memoryMb, sandboxes: r.sandboxes + 1 });
      diskPlaced.set(n.id, (diskPlaced.get(n.id) ?? 0) + (req.diskMb ?? 0));
    }
  }
  return { decisions, reserved };
}

/**
 * Whether node `self` may take `req` itself (a direct create, src/service/direct-create.ts): it fits
 * there, and the strategy's first choice is within `slackMb` of memory of it (spread: `self` has at most
 * that much less free memory than the node with the most; binpack: at most that much more than the
 * fullest node that fits). The slack lets every node that takes creates place on itself while the
 * nodes stay about level, instead of all but one sending every create to the scheduler.
 */
export function placesHere(req: PlacementRequest, nodes: PlacementNode[], self: string, slackMb: number, opts: PlacementOptions = defaultPlacementOptions): boolean {
  const { candidates } = rank(req, nodes, (n) => n.reserved, (n) => (n.diskFreeMb === undefined ? Infinity : n.diskFreeMb), opts);
  const mine = candidates.find((c) => c.id === self);
  if (!mine) return false;
  const best = candidates[0]!;
  return opts.strategy === 'spread' ? mine.freeMem >= best.freeMem - slackMb : mine.freeMem <= best.freeMem + slackMb;
}

/** Whether a node of `capacity` holds `reserved` (after adding a sandbox to it) within what placement may reserve there. */
export function hasRoom(capacity: NodeCapacity, reserved: Reservation): boolean {
  const room = allocatable(capacity);
  return reserved.cpus <= room.cpus && reserved.memoryMb <= room.memoryMb && (capacity.maxSandboxes <= 0 || reserved.sandboxes <= capacity.maxSandboxes);
}

/** The nodes `req` fits on, the strategy's order (first choice first), and why the others do not qualify. */
function rank(
  req: PlacementRequest,
  nodes: PlacementNode[],
  tally: (n: PlacementNode) => Reservation,
  diskFree: (n: PlacementNode) => number,
  opts: PlacementOptions,
): { candidates: { id: string; freeMem: number }[]; reasons: string[]; eligible: number } {
  const candidates: { id: string; freeMem: number }[] = [];
  const reasons: string[] = [];
  let eligible = 0;
  for (const n of nodes) {
    if (req.node && n.id !== req.node) continue;
    if (!n.runtimes.includes(req.runtime)) {
      reasons.push(`${n.name}: no ${req.runtime} runtime`);
      continue;
    }
    if (!matches(n.labels, req.nodeSelector)) {
      reasons.push(`${n.name}: labels do not match`);
      continue;
    }
    eligible++;
    const r = tally(n);
    const room = allocatable(n.capacity);
    const freeMem = room.memoryMb - r.memoryMb;
    const freeCpu = room.cpus - r.cpus;
    if (req.cpus > n.capacity.cpus) reasons.push(`${n.name}: has ${n.capacity.cpus} CPUs`);
    else if (freeMem < req.memoryMb) reasons.push(`${n.name}: ${Math.max(0, Math.floor(freeMem))} MiB unreserved`);
    else if (req.memoryMb > n.capacity.memoryMb) reasons.push(`${n.name}: offers ${n.capacity.memoryMb} MiB, less than one sandbox's limit`);
    else if (freeCpu < req.cpus) reasons.push(`${n.name}: ${Math.max(0, freeCpu)} CPUs unreserved`);
    else if (diskFree(n) < (req.diskMb ?? 0)) reasons.push(`${n.name}: ${Math.max(0, Math.floor(diskFree(n)))} MiB of disk free`);
    else if (n.capacity.maxSandboxes > 0 && r.sandboxes >= n.capacity.maxSandboxes) reasons.push(`${n.name}: at its limit of ${n.capacity.maxSandboxes} sandboxes`);
    else candidates.push({ id: n.id, freeMem });
  }
  candidates.sort((a, b) => (opts.strategy === 'spread' ? b.freeMem - a.freeMem : a.freeMem - b.freeMem) || a.id.localeCompare(b.id));
  return { candidates, reasons, eligible };
}

function placeOne(
  req: PlacementRequest,
  nodes: PlacementNode[],
  tally: (n: PlacementNode) => Reservation,
  diskFree: (n: PlacementNode) => number,
  opts: PlacementOptions,
): PlacementDecision {
  if (req.node && !nodes.some((n) => n.id === req.node)) {
    return { error: { code: 'FAILED_PRECONDITION', message: `the sandbox's volumes or snapshot live on node ${req.node}, which is not alive; it can only run there` } };
  }
  const { candidates, reasons, eligible } = rank(req, nodes, tally, diskFree, opts);
  if (candidates.length === 0) {
    const why = nodes.length === 0 ? 'no alive nodes' : `${req.node ? `its volumes or snapshot live on node ${req.node}; ` : ''}${reasons.join('; ')}`;
    // No node could ever take it (wrong runtime or labels) vs. every fitting node is full right now.
    const code = eligible === 0 ? 'FAILED_PRECONDITION' : 'RESOURCE_EXHAUSTED';
    return { error: { code, message: `no node can take a sandbox with ${req.cpus} CPU / ${req.memoryMb} MiB (${why})` } };
  }
  return { node: candidates[0]!.id };
}
