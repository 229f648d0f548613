import { describe, expect, it } from 'vitest';
import type { NodeInfo } from '../core/types.js';
import { PromMetrics } from './prometheus.js';
import type { SandboxUsage } from './sandbox-metrics.js';

const node = { id: 'n1', capacity: { cpus: 2, memoryMb: 1024, maxSandboxes: 0 }, reserved: { cpus: 0, memoryMb: 0, sandboxes: 0 } } as NodeInfo;
const usage = (id: string, network?: SandboxUsage['network']): SandboxUsage => ({
  id, name: id, runtime: 'oci', cpuSeconds: 1, memoryBytes: 10, memoryLimitBytes: 100, pids: 1, diskUsedBytes: 5, ...(network ? { network } : {}),
});

/** The samples of one metric in the exposition text, as `labels value` with the labels sorted (their order is prom-client's). */
const lines = (text: string, name: string) =>
  text.split('\n').flatMap((l) => {
    const m = /^(\w+)\{(.*)\} (\S+)$/.exec(l);
    return m && m[1] === name ? [`${m[2]!.split(',').sort().join(',')} ${m[3]}`] : [];
  });

describe('PromMetrics', () => {
  it('has network byte counters only for sandboxes with a network, and drops them with the sandbox', async () => {
    let now = [usage('sb-net', { rxBytes: 4096, txBytes: 512 }), usage('sb-plain')];
    const prom = new PromMetrics({ nodeId: 'n1', node: async () => node, sandboxes: async () => [], usage: () => now });
    let text = (await prom.render()).body;
    expect(lines(text, 'prism_sandbox_network_receive_bytes_total')).toEqual(['name="sb-net",node="n1",runtime="oci",sandbox="sb-net" 4096']);
    expect(lines(text, 'prism_sandbox_network_transmit_bytes_total')).toEqual(['name="sb-net",node="n1",runtime="oci",sandbox="sb-net" 512']);
    expect(lines(text, 'prism_sandbox_pids')).toHaveLength(2);
    now = [usage('sb-plain')];
    text = (await prom.render()).body;
    expect(lines(text, 'prism_sandbox_network_receive_bytes_total')).toEqual([]);
  });

  it('counts image pulls by the store that pulled and their outcome', async () => {
    const prom = new PromMetrics({ nodeId: 'n1', node: async () => node, sandboxes: async () => [], usage: () => [] });
    prom.observePull('prism', 1.5, true);
    prom.observePull('prism', 0.2, false);
    prom.observePull('docker', 3, true);
    const text = (await prom.render()).body;
    expect(lines(text, 'prism_image_pull_duration_seconds_count').sort()).toEqual([
      'node="n1",outcome="error",store="prism" 1',
      'node="n1",outcome="ok",store="docker" 1',
      'node="n1",outcome="ok",store="prism" 1',
    ]);
    expect(lines(text, 'prism_image_pull_duration_seconds_sum')).toContain('node="n1",outcome="ok",store="prism" 1.5');
  });
});
