import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { REQUIRED_CONTROLLERS, type CgroupHost } from './cgroups.js';

export const CGROUP_ROOT = '/sys/fs/cgroup';
/** Present while systemd is PID 1 (sd_booted(3)). */
const SYSTEMD_RUN_DIR = '/run/systemd/system';

export interface ProbeFs {
  exists(path: string): boolean;
  read(path: string): string | undefined;
  list(path: string): string[];
}

const realFs: ProbeFs = {
  exists: existsSync,
  read: (p) => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return undefined;
    }
  },
  list: (p) => {
    try {
      return readdirSync(p);
    } catch {
      return [];
    }
  },
};

/**
 * What cgroups this host offers Prism. A host whose v1 hierarchies carry the memory controller is v1
 * (also "hybrid" hosts, where a v2 tree with few or no controllers sits at /sys/fs/cgroup/unified);
 * a host whose /sys/fs/cgroup is the unified tree is v2. On v2, the controllers are those the root
 * offers (`cgroup.controllers`): systemd enables them down to the scopes it makes; without systemd
 * Prism enables them itself, which needs the root's `cgroup.subtree_control` to be writable.
 */
export function probeCgroups(root = CGROUP_ROOT, fs: ProbeFs = realFs, systemdDir = SYSTEMD_RUN_DIR): CgroupHost {
  const systemd = fs.exists(systemdDir);
  if (fs.exists(join(root, 'memory', 'memory.limit_in_bytes'))) {
    const controllers = fs.list(root).filter((c) => fs.exists(join(root, c, 'cgroup.procs')) || fs.exists(join(root, c, 'tasks')));
    const have = new Set(controllers.flatMap((c) => c.split(',')));
    const missing = [...REQUIRED_CONTROLLERS, 'cpuacct'].filter((c) => !have.has(c));
    return {
      version: 1, systemd, controllers: [...have].filter((c) => !c.startsWith('name=')).sort(),
      ...(missing.length ? { problem: `cgroup v1 controllers not mounted: ${missing.join(', ')} (mount them under ${root}, or boot with cgroup v2)` } : {}),
    };
  }
  const offered = fs.read(join(root, 'cgroup.controllers'));
  if (offered === undefined) {
    return { version: 1, systemd, controllers: [], problem: `no cgroup hierarchy at ${root}: mount cgroup2 there (mount -t cgroup2 none ${root})` };
  }
  const controllers = offered.trim().split(/\s+/).filter(Boolean).sort();
  const missing = REQUIRED_CONTROLLERS.filter((c) => !controllers.includes(c));
  if (missing.length) {
    return {
      version: 2, systemd, controllers,
      problem: `cgroup v2 at ${root} does not offer ${missing.join(', ')} to Prism (its parent must enable them in cgroup.subtree_control; in a container, run it with its own cgroup namespace and a delegated cgroup)`,
    };
  }
  return { version: 2, systemd, controllers };
}
