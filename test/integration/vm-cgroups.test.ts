import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { enterCgroup, hasCgroupV1, removeCgroup, vmHierarchies } from '../../src/runtime/microvm/qemu-process.js';

const skip = process.getuid?.() !== 0 ? 'needs root' : !hasCgroupV1() ? 'no cgroup v1 controllers' : undefined;
if (skip) console.warn(`skipping VM cgroup tests: ${skip}`);

describe.skipIf(!!skip)('a VM\'s host cgroups', () => {
  it('take QEMU out of prismd\'s cgroup in every hierarchy systemd tracks units in, so a service restart cannot kill it', async () => {
    const id = `cgtest${process.pid}`;
    const child = spawn('sleep', ['60']);
    try {
      await new Promise((r) => child.once('spawn', r));
      await enterCgroup(id, child.pid!, { memoryBytes: 64 << 20, pids: 16 });
      const own = readFileSync(`/proc/${child.pid}/cgroup`, 'utf8');
      for (const h of vmHierarchies()) expect(existsSync(join('/sys/fs/cgroup', h, 'prism-vm', id)), h).toBe(true);
      expect(own).toMatch(new RegExp(`:memory:/prism-vm/${id}$`, 'm'));
      if (vmHierarchies().includes('systemd')) expect(own).toMatch(new RegExp(`:name=systemd:/prism-vm/${id}$`, 'm'));
      if (vmHierarchies().includes('unified')) expect(own).toMatch(new RegExp(`^0::/prism-vm/${id}$`, 'm'));
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
      await removeCgroup(id);
    }
    for (const h of vmHierarchies()) expect(existsSync(join('/sys/fs/cgroup', h, 'prism-vm', id)), h).toBe(false);
  });
});
