import { PrismError } from '../core/errors.js';
import type { NodeInfo, RuntimeName, Sandbox } from '../core/types.js';

/**
 * Placement as a pure function: cluster state in, decision out. Memory is the hard constraint
 * (requests must fit in what the node has minus what its sandboxes reserved); CPU is a quota and may be
 * overcommitted up to `cpuOvercommit` times the node's cores, as container hosts usually are.
 */
export interface PlacementRequest {
  runtime: RuntimeName;
  cpus: number;
  memoryMb: number;
}

export interface PlacementOptions {
  strategy: 'spread' | 'binpack';
  cpuOvercommit: number;
  /** Fraction of a node's memory that sandboxes may reserve. */
  memoryFraction: number;
}

export const defaultPlacementOptions: PlacementOptions = { strategy: 'spread', cpuOvercommit: 4, memoryFraction: 0.9 };

/** Sandboxes in these states hold a reservation on their node. */
const RESERVING = new Set<Sandbox['status']>(['scheduled', 'starting', 'running', 'stopping']);

export function reservations(sandboxes: Sandbox[]): Map<string, { cpus: number; memoryMb: number; count: number }> {
  const out = new Map<string, { cpus: number; memoryMb: number; count: number }>();
  for (const sb of sandboxes) {
    if (!sb.node || !RESERVING.has(sb.status)) continue;
    const r = out.get(sb.node) ?? { cpus: 0, memoryMb: 0, count: 0 };
    r.cpus += sb.cpus;
    r.memoryMb += sb.memoryMb;
    r.count += 1;
    out.set(sb.node, r);
  }
  return out;
}

export function place(
  req: PlacementRequest,
  nodes: NodeInfo[],
  sandboxes: Sandbox[],
  opts: PlacementOptions = defaultPlacementOptions,
): string {
  const reserved = reservations(sandboxes);
  const candidates: { id: string; freeMem: number; freeCpu: number }[] = [];
  const reasons: string[] = [];
  for (const n of nodes) {
    if (n.status !== 'alive') continue;
    if (!n.runtimes.includes(req.runtime)) {
      reasons.push(`${n.name}: no ${req.runtime} runtime`);
      continue;
    }
    const r = reserved.get(n.id) ?? { cpus: 0, memoryMb: 0, count: 0 };
    const freeMem = (n.resources.memoryBytes / 2 ** 20) * opts.memoryFraction - r.memoryMb;
    const freeCpu = n.resources.cpus * opts.cpuOvercommit - r.cpus;
    if (req.cpus > n.resources.cpus) reasons.push(`${n.name}: has ${n.resources.cpus} CPUs`);
    else if (freeMem < req.memoryMb) reasons.push(`${n.name}: ${Math.floor(freeMem)} MiB memory free`);
    else if (freeCpu < req.cpus) reasons.push(`${n.name}: ${freeCpu} CPUs unreserved`);
    else candidates.push({ id: n.id, freeMem, freeCpu });
  }
  if (candidates.length === 0) {
    const why = reasons.length ? reasons.join('; ') : 'no alive nodes';
    throw new PrismError('RESOURCE_EXHAUSTED', `no node can take a sandbox with ${req.cpus} CPU / ${req.memoryMb} MiB (${why})`);
  }
  candidates.sort((a, b) => (opts.strategy === 'spread' ? b.freeMem - a.freeMem : a.freeMem - b.freeMem) || a.id.localeCompare(b.id));
  return candidates[0]!.id;
}
