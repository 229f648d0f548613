import { describe, expect, it } from 'vitest';
import { PrismError } from '../core/errors.js';
import type { NodeInfo, Sandbox, SandboxStatus } from '../core/types.js';
import { defaultPlacementOptions, place, reservations, type PlacementRequest } from './placement.js';

const GiB = 2 ** 30;

function node(id: string, memGiB: number, cpus = 4, extra: Partial<NodeInfo> = {}): NodeInfo {
  return {
    runtimeInfo: [],
    id,
    name: `name-${id}`,
    address: `http://${id}:8008`,
    status: 'alive',
    version: 'test',
    runtimes: ['oci'],
    defaultRuntime: 'oci',
    resources: { cpus, memoryBytes: memGiB * GiB, memoryUsedBytes: 0, diskBytes: 0, diskUsedBytes: 0, load1: 0 },
    sandboxes: 0,
    startedAt: '2024-01-01T00:00:00.000Z',
    heartbeatAt: '2024-01-01T00:00:00.000Z',
    ...extra,
  };
}

let seq = 0;
function sandbox(nodeId: string, status: SandboxStatus, memoryMb: number, cpus = 1): Sandbox {
  seq++;
  return {
    id: `sb-${seq}`,
    name: `sb-${seq}`,
    status,
    node: nodeId,
    image: 'img',
    runtime: 'oci',
    cpus,
    memoryMb,
    pidsLimit: 256,
    env: {},
    workdir: '/',
    timeoutSec: 0,
    createdAt: '2024-01-01T00:00:00.000Z',
  };
}

const req = (memoryMb: number, cpus = 1, runtime: PlacementRequest['runtime'] = 'oci'): PlacementRequest => ({ runtime, cpus, memoryMb });

function placeError(fn: () => unknown): PrismError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PrismError);
    return e as PrismError;
  }
  throw new Error('expected place() to throw');
}

describe('place', () => {
  const small = node('a', 4);
  const big = node('b', 16);

  it('spread picks the node with the most free memory, binpack the least', () => {
    expect(place(req(512), [small, big], [])).toBe('b');
    expect(place(req(512), [small, big], [], { ...defaultPlacementOptions, strategy: 'binpack' })).toBe('a');
  });

  it('counts reservations: spread moves away from a node that filled up', () => {
    // 16 GiB * 0.9 = 14745 MiB; reserving 13 GiB leaves less than node a's 3686 MiB.
    const onB = [sandbox('b', 'running', 13 * 1024)];
    expect(place(req(512), [small, big], onB)).toBe('a');
  });

  it('breaks ties by node id', () => {
    expect(place(req(512), [node('z', 8), node('m', 8)], [])).toBe('m');
  });

  it('only reserving statuses hold memory', () => {
    const statuses: SandboxStatus[] = ['pending', 'scheduled', 'starting', 'running', 'stopping', 'stopped', 'failed', 'lost', 'deleting'];
    const sbs = statuses.map((s) => sandbox('a', s, 100, 1));
    expect(reservations(sbs).get('a')).toEqual({ cpus: 4, memoryMb: 400, count: 4 });
    // A sandbox not yet placed reserves nothing anywhere.
    expect(reservations([sandbox('', 'scheduled', 100)]).size).toBe(0);

    // Node a: 4 GiB * 0.9 = 3686 MiB. Stopped/failed sandboxes do not count against it.
    const freed = [sandbox('a', 'stopped', 3000), sandbox('a', 'failed', 3000), sandbox('a', 'lost', 3000)];
    expect(place(req(3000), [small], freed)).toBe('a');
    const held = [sandbox('a', 'stopping', 3000)];
    expect(placeError(() => place(req(3000), [small], held)).code).toBe('RESOURCE_EXHAUSTED');
  });

  it('filters on runtime', () => {
    const vm = node('vm', 2, 4, { runtimes: ['oci', 'microvm'] });
    expect(place(req(512, 1, 'microvm'), [big, vm], [])).toBe('vm');
    const err = placeError(() => place(req(512, 1, 'docker'), [big, vm], []));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toContain('name-b: no docker runtime');
  });

  it('skips dead nodes', () => {
    const deadBig = node('b', 64, 4, { status: 'dead' });
    expect(place(req(512), [small, deadBig], [])).toBe('a');
    const err = placeError(() => place(req(512), [deadBig], []));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toContain('no alive nodes');
  });

  it('refuses a sandbox with more CPUs than the node has, even with overcommit room', () => {
    const err = placeError(() => place(req(512, 8), [node('a', 16, 4)], []));
    expect(err.message).toContain('name-a: has 4 CPUs');
  });

  it('allows CPU overcommit up to cpuOvercommit x cores, then refuses', () => {
    const n = node('a', 64, 2);
    const opts = { ...defaultPlacementOptions, cpuOvercommit: 2 };
    const three = [1, 2, 3].map(() => sandbox('a', 'running', 100, 1));
    expect(place(req(100, 1), [n], three, opts)).toBe('a'); // 3 + 1 = 4 = 2 cores x 2
    const four = [...three, sandbox('a', 'running', 100, 1)];
    const err = placeError(() => place(req(100, 1), [n], four, opts));
    expect(err.message).toContain('name-a: 0 CPUs unreserved');
  });

  it('RESOURCE_EXHAUSTED names the request and every node with its reason', () => {
    const nodes = [node('a', 1), node('b', 2, 4, { runtimes: ['microvm'] }), node('c', 64, 1)];
    const err = placeError(() => place(req(2048, 2), nodes, []));
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toContain('2 CPU / 2048 MiB');
    expect(err.message).toContain('name-a: 921 MiB memory free');
    expect(err.message).toContain('name-b: no oci runtime');
    expect(err.message).toContain('name-c: has 1 CPUs');
  });
});
