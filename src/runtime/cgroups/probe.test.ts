import { describe, expect, it } from 'vitest';
import { probeCgroups, type ProbeFs } from './probe.js';

/** A fake /sys/fs/cgroup: files with contents, directories as listed. */
function fakeFs(files: Record<string, string>, dirs: Record<string, string[]> = {}): ProbeFs {
  return {
    exists: (p) => p in files || p in dirs,
    read: (p) => files[p],
    list: (p) => dirs[p] ?? [],
  };
}

describe('probeCgroups', () => {
  it('finds a v1 host (this machine: v1 controllers, a v2 tree with only hugetlb) and its controllers', () => {
    const fs = fakeFs(
      {
        '/cg/memory/memory.limit_in_bytes': '', '/cg/memory/cgroup.procs': '', '/cg/cpu,cpuacct/cgroup.procs': '',
        '/cg/pids/cgroup.procs': '', '/cg/systemd/cgroup.procs': '', '/cg/unified/cgroup.procs': '',
      },
      { '/cg': ['memory', 'cpu,cpuacct', 'cpu', 'cpuacct', 'pids', 'systemd', 'unified'] },
    );
    const host = probeCgroups('/cg', fs, '/run/systemd/system');
    expect(host).toMatchObject({ version: 1, systemd: false });
    expect(host.problem).toBeUndefined();
    expect(host.controllers).toEqual(expect.arrayContaining(['memory', 'cpu', 'cpuacct', 'pids']));
  });

  it('names the v1 controllers that are missing', () => {
    const fs = fakeFs({ '/cg/memory/memory.limit_in_bytes': '', '/cg/memory/cgroup.procs': '' }, { '/cg': ['memory'] });
    expect(probeCgroups('/cg', fs, '/x').problem).toMatch(/cpu, pids, cpuacct/);
  });

  it('finds a v2 systemd host with the controllers Prism needs', () => {
    const fs = fakeFs({ '/cg/cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n', '/run/systemd/system': '' });
    expect(probeCgroups('/cg', fs, '/run/systemd/system')).toEqual({
      version: 2, systemd: true, controllers: ['cpu', 'cpuset', 'hugetlb', 'io', 'memory', 'misc', 'pids', 'rdma'],
    });
  });

  it('refuses a v2 tree that does not offer memory, cpu and pids, and says how to fix it', () => {
    const host = probeCgroups('/cg', fakeFs({ '/cg/cgroup.controllers': 'hugetlb\n' }), '/x');
    expect(host.version).toBe(2);
    expect(host.problem).toMatch(/does not offer memory, cpu, pids.*subtree_control/);
  });

  it('refuses a host with no cgroup hierarchy at all', () => {
    expect(probeCgroups('/cg', fakeFs({}), '/x').problem).toMatch(/no cgroup hierarchy at \/cg: mount cgroup2/);
  });
});
