import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { vmCgroups } from '../fixtures/host-cgroups.js';
import { probeCgroups } from '../../src/runtime/cgroups/probe.js';

const host = probeCgroups();
const skip = process.getuid?.() !== 0 ? 'needs root'
  : host.problem ? host.problem
  // Under systemd QEMU starts inside its scope (systemd-run); enter only verifies (host-VM suite).
  : vmCgroups.placement === 'systemd' ? 'systemd scopes: covered by the host-VM suite' : undefined;
if (skip) console.warn(`skipping VM cgroup tests: ${skip}`);

describe.skipIf(!!skip)('a VM\'s host cgroups', () => {
  it('take QEMU out of prismd\'s cgroup in every hierarchy (systemd\'s too), so a service restart cannot kill it; remove leaves none', async () => {
    const id = `cgtest${process.pid}`;
    const child = spawn('sleep', ['60']);
    try {
      await new Promise((r) => child.once('spawn', r));
      await vmCgroups.enter(id, child.pid!, { memoryBytes: 64 << 20, pids: 16 });
      const own = readFileSync(`/proc/${child.pid}/cgroup`, 'utf8');
      expect(await vmCgroups.pids(id)).toEqual([child.pid]);
      if (vmCgroups.version === 1) {
        expect(own).toMatch(new RegExp(`:memory:/prism-vm/${id}$`, 'm'));
        if (existsSync('/sys/fs/cgroup/systemd/cgroup.procs')) expect(own).toMatch(new RegExp(`:name=systemd:/prism-vm/${id}$`, 'm'));
        if (existsSync('/sys/fs/cgroup/unified/cgroup.procs')) expect(own).toMatch(new RegExp(`^0::/prism-vm/${id}$`, 'm'));
      } else {
        expect(own).toBe(`0::/prism-vm/${id}\n`);
      }
      expect(await vmCgroups.usage(id)).toMatchObject({ memoryLimitBytes: 64 << 20, pids: 1 });
    } finally {
      // remove kills what is left inside.
      expect(await vmCgroups.remove(id)).toEqual([]);
    }
    expect(vmCgroups.dirs(id).filter((d) => existsSync(d))).toEqual([]);
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    expect(child.signalCode).toBe('SIGKILL');
  });
});
