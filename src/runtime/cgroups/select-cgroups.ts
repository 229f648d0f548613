import type { CgroupHost, TaskCgroups } from './cgroups.js';
import { CGROUP_ROOT, probeCgroups } from './probe.js';
import { CgroupsV1 } from './v1/cgroups-v1.js';
import { CgroupsV2 } from './v2/cgroups-v2.js';

export type CgroupKind = 'prism' | 'prism-vm';

/**
 * The cgroups of `kind` for this host: v1 as probed, v2 in systemd scopes when systemd is PID 1, else
 * directories Prism makes under the root. Unusable hosts still get an implementation (its calls fail);
 * drivers refuse such hosts in probe() with `host.problem`.
 */
export function taskCgroups(kind: CgroupKind, host: CgroupHost = probeCgroups(), root = CGROUP_ROOT): TaskCgroups {
  if (host.version === 1) return new CgroupsV1(kind, root);
  return new CgroupsV2(kind, root, host.systemd ? 'systemd' : 'cgroupfs');
}
