import { describe, expect, it } from 'vitest';
import { defaultPlacementOptions, placeBatch, placesHere, type PlacementNode, type PlacementRequest } from './placement.js';

function node(id: string, memoryMb: number, cpus = 4, extra: Partial<PlacementNode> = {}): PlacementNode {
  return {
    id,
    name: `name-${id}`,
    runtimes: ['oci'],
    labels: {},
    capacity: { cpus, memoryMb, maxSandboxes: 0 },
    reserved: { cpus: 0, memoryMb: 0, sandboxes: 0 },
    ...extra,
  };
}

let seq = 0;
const req = (memoryMb: number, cpus = 1, extra: Partial<PlacementRequest> = {}): PlacementRequest => ({
  id: `sb-${++seq}`,
  runtime: 'oci',
  cpus,
  memoryMb,
  ...extra,
});

function one(r: PlacementRequest, nodes: PlacementNode[], opts = defaultPlacementOptions) {
  return placeBatch([r], nodes, opts).decisions.get(r.id)!;
}

describe('placeBatch', () => {
  const small = node('a', 4096);
  const big = node('b', 16384);

  it('a sandbox with volumes goes to the node holding them, even when another has more room', () => {
    expect(one(req(512, 1, { node: 'a' }), [small, big])).toEqual({ node: 'a' });
  });

  it('a sandbox with volumes is refused, with the reason, when their node cannot take it', () => {
    const dead = one(req(512, 1, { node: 'gone' }), [small, big]);
    expect(dead).toEqual({ error: { code: 'FAILED_PRECONDITION', message: expect.stringMatching(/volumes or snapshot live on node gone, which is not alive/) } });
    const full = one(req(8192, 1, { node: 'a' }), [small, big]);
    expect(full).toEqual({ error: { code: 'RESOURCE_EXHAUSTED', message: expect.stringMatching(/volumes or snapshot live on node a; name-a: 4096 MiB unreserved/) } });
    const noRuntime = one(req(512, 1, { node: 'a', runtime: 'microvm' }), [small, { ...big, runtimes: ['oci', 'microvm'] }]);
    expect(noRuntime).toEqual({ error: { code: 'FAILED_PRECONDITION', message: expect.stringMatching(/name-a: no microvm runtime/) } });
  });

  it('spread picks the node with the most free memory, binpack the fullest that fits', () => {
    expect(one(req(512), [small, big])).toEqual({ node: 'b' });
    expect(one(req(512), [small, big], { ...defaultPlacementOptions, strategy: 'binpack' })).toEqual({ node: 'a' });
  });

  it('counts existing reservations', () => {
    const fullB = { ...big, reserved: { cpus: 1, memoryMb: 13 * 1024, sandboxes: 1 } };
    expect(one(req(512), [small, fullB])).toEqual({ node: 'a' });
  });

  it('spreads a batch evenly across equal nodes and never overcommits within the batch', () => {
    const nodes = [node('a', 2048), node('b', 2048), node('c', 2048)];
    const reqs = Array.from({ length: 14 }, () => req(512));
    const { decisions, reserved } = placeBatch(reqs, nodes);
    const per = new Map<string, number>();
    let refused = 0;
    for (const d of decisions.values()) {
      if ('node' in d) per.set(d.node, (per.get(d.node) ?? 0) + 1);
      else {
        refused++;
        expect(d.error.code).toBe('RESOURCE_EXHAUSTED');
      }
    }
    expect([...per.values()]).toEqual([4, 4, 4]);
    expect(refused).toBe(2);
    for (const r of reserved.values()) expect(r).toEqual({ cpus: 4, memoryMb: 2048, sandboxes: 4 });
  });

  it('binpack fills one node before the next', () => {
    const nodes = [node('a', 2048), node('b', 2048)];
    const reqs = Array.from({ length: 5 }, () => req(512));
    const { decisions } = placeBatch(reqs, nodes, { ...defaultPlacementOptions, strategy: 'binpack' });
    expect([...decisions.values()].map((d) => ('node' in d ? d.node : 'x'))).toEqual(['a', 'a', 'a', 'a', 'b']);
  });

  it('breaks ties by node id', () => {
    expect(one(req(512), [node('z', 8192), node('m', 8192)])).toEqual({ node: 'm' });
  });

  it('filters on runtime and labels; no possible node is FAILED_PRECONDITION', () => {
    const vm = node('vm', 2048, 4, { runtimes: ['oci', 'microvm'], labels: { zone: 'x' } });
    expect(one(req(512, 1, { runtime: 'microvm' }), [big, vm])).toEqual({ node: 'vm' });
    expect(one(req(512, 1, { nodeSelector: { zone: 'x' } }), [big, vm])).toEqual({ node: 'vm' });
    const d = one(req(512, 1, { runtime: 'docker' }), [big, vm]);
    expect(d).toMatchObject({ error: { code: 'FAILED_PRECONDITION' } });
    expect('error' in d && d.error.message).toContain('name-b: no docker runtime');
    expect(one(req(512, 1, { nodeSelector: { zone: 'y' } }), [big, vm])).toMatchObject({ error: { code: 'FAILED_PRECONDITION' } });
  });

  it('with no alive nodes says so', () => {
    const d = one(req(512), []);
    expect(d).toMatchObject({ error: { code: 'FAILED_PRECONDITION' } });
    expect('error' in d && d.error.message).toContain('no alive nodes');
  });

  it('refuses more CPUs than the node has, even with overcommit room', () => {
    const d = one(req(512, 8), [node('a', 16384, 4)]);
    expect('error' in d && d.error.message).toContain('name-a: has 4 CPUs');
  });

  it('allows CPU overcommit up to the node\'s cpuOvercommit x cores, then refuses', () => {
    const n = node('a', 64 * 1024, 2, { reserved: { cpus: 3, memoryMb: 300, sandboxes: 3 } });
    n.capacity.cpuOvercommit = 2;
    const { decisions } = placeBatch([req(100), req(100)], [n], defaultPlacementOptions);
    const [first, second] = [...decisions.values()];
    expect(first).toEqual({ node: 'a' }); // 3 + 1 = 4 = 2 cores x 2
    expect(second).toMatchObject({ error: { code: 'RESOURCE_EXHAUSTED' } });
    expect(second && 'error' in second && second.error.message).toContain('name-a: 0 CPUs unreserved');
  });

  it('reserves memory up to memoryOvercommit x capacity (none by default), never one sandbox above the capacity', () => {
    // 1 GiB offered: four 256 MiB sandboxes by default, eight with 2x, and never one of 2 GiB.
    const count = (memoryOvercommit?: number) => {
      const n = node('a', 1024, 64);
      if (memoryOvercommit) n.capacity.memoryOvercommit = memoryOvercommit;
      const { decisions } = placeBatch(Array.from({ length: 10 }, () => req(256)), [n]);
      return [...decisions.values()].filter((d) => 'node' in d).length;
    };
    expect(count()).toBe(4);
    expect(count(1)).toBe(4);
    expect(count(2)).toBe(8);
    const big = node('a', 1024, 64);
    big.capacity.memoryOvercommit = 4;
    const d = one(req(2048), [big]);
    expect(d).toMatchObject({ error: { code: 'RESOURCE_EXHAUSTED' } });
    expect('error' in d && d.error.message).toContain('name-a: offers 1024 MiB, less than one sandbox\'s limit');
  });

  it('defaults a node of an older version (no factors) to 4x CPU and 1x memory', () => {
    const n = node('a', 1024, 1);
    const { decisions } = placeBatch(Array.from({ length: 6 }, () => req(64, 1)), [n]);
    expect([...decisions.values()].filter((d) => 'node' in d)).toHaveLength(4);
  });

  it('honours maxSandboxes', () => {
    const n = node('a', 64 * 1024, 64, { capacity: { cpus: 64, memoryMb: 65536, maxSandboxes: 2 } });
    const { decisions } = placeBatch([req(10), req(10), req(10)], [n]);
    expect([...decisions.values()].map((d) => 'node' in d)).toEqual([true, true, false]);
  });

  it('skips a node whose free disk cannot hold the writable layer, counting the batch', () => {
    const a = node('a', 16384, 4, { diskFreeMb: 1500 });
    const b = node('b', 4096, 4, { diskFreeMb: 100_000 });
    // a has more free memory (spread prefers it) until its disk runs short within the batch.
    const reqs = [req(256, 1, { diskMb: 1024 }), req(256, 1, { diskMb: 1024 })];
    const { decisions } = placeBatch(reqs, [a, b]);
    expect(reqs.map((r) => decisions.get(r.id))).toEqual([{ node: 'a' }, { node: 'b' }]);
    const refused = one(req(256, 1, { diskMb: 2048 }), [a]);
    expect(refused).toMatchObject({ error: { code: 'RESOURCE_EXHAUSTED' } });
    expect(JSON.stringify(refused)).toContain('1500 MiB of disk free');
    // Nodes that have not reported their disk yet are not held back.
    expect(one(req(256, 1, { diskMb: 1 << 20 }), [node('c', 4096)])).toEqual({ node: 'c' });
  });

  it('names the request and every node with its reason', () => {
    const nodes = [node('a', 921), node('b', 2048, 4, { runtimes: ['microvm'] }), node('c', 65536, 1)];
    const d = one(req(2048, 2), nodes);
    expect(d).toMatchObject({ error: { code: 'RESOURCE_EXHAUSTED' } });
    const msg = 'error' in d ? d.error.message : '';
    expect(msg).toContain('2 CPU / 2048 MiB');
    expect(msg).toContain('name-a: 921 MiB unreserved');
    expect(msg).toContain('name-b: no oci runtime');
    expect(msg).toContain('name-c: has 1 CPUs');
  });
});

describe('placesHere', () => {
  const req: PlacementRequest = { id: 'x', runtime: 'oci', cpus: 1, memoryMb: 256 };
  const used = (n: PlacementNode, sandboxes: number): PlacementNode => ({ ...n, reserved: { cpus: sandboxes, memoryMb: 256 * sandboxes, sandboxes } });

  it('spread: a node takes the create while it is within the slack of the emptiest node', () => {
    const nodes = [used(node('a', 8192, 64), 3), used(node('b', 8192, 64), 0)];
    expect(placesHere(req, nodes, 'a', 4 * 256)).toBe(true);
    expect(placesHere(req, nodes, 'a', 2 * 256)).toBe(false);
    expect(placesHere(req, nodes, 'b', 0)).toBe(true);
  });

  it('binpack: the fullest node that fits, within the slack', () => {
    const nodes = [used(node('a', 8192, 64), 3), used(node('b', 8192, 64), 0)];
    const binpack = { strategy: 'binpack' as const };
    expect(placesHere(req, nodes, 'a', 0, binpack)).toBe(true);
    expect(placesHere(req, nodes, 'b', 2 * 256, binpack)).toBe(false);
    expect(placesHere(req, nodes, 'b', 3 * 256, binpack)).toBe(true);
  });

  it('never where the sandbox does not fit or may not run, whatever the slack', () => {
    const full = used(node('a', 512, 64), 2);
    expect(placesHere(req, [full, node('b', 8192)], 'a', 1 << 30)).toBe(false);
    expect(placesHere({ ...req, runtime: 'microvm' }, [node('a', 8192)], 'a', 1 << 30)).toBe(false);
    expect(placesHere({ ...req, nodeSelector: { gpu: 'yes' } }, [node('a', 8192)], 'a', 1 << 30)).toBe(false);
    expect(placesHere({ ...req, node: 'b' }, [node('a', 8192), node('b', 8192)], 'a', 1 << 30)).toBe(false);
    expect(placesHere(req, [node('b', 8192)], 'a', 1 << 30)).toBe(false);
  });
});
