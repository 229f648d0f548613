import { REQUIRED_CONTROLLERS } from '../../runtime/cgroups/cgroups.js';
import { taskCgroups } from '../../runtime/cgroups/select-cgroups.js';
import { DOCS, severity, type Check, type DoctorContext } from './check.js';

/** Controllers shown for information: Prism does not set cpuset or io limits yet. */
const INFORMATIVE = [['cpuset', 'cpuset'], ['io', 'blkio']] as const;
export const SYSTEMD_PRIVATE_SOCKET = '/run/systemd/private';

/** The version and controllers the cgroup probe (src/runtime/cgroups/probe.ts) found, as the drivers get them. */
export async function checkCgroups(ctx: DoctorContext): Promise<Check> {
  const h = ctx.cgroups;
  const has = (c: string) => h.controllers.includes(c);
  const required = REQUIRED_CONTROLLERS.map((c) => `${c} ${has(c) ? 'yes' : 'NO'}`).join(', ');
  // v2 calls the block I/O controller io, v1 blkio.
  const informative = INFORMATIVE.map(([name, v1]) => `${name} ${has(h.version === 1 ? v1 : name) ? 'yes' : 'no'}`).join(', ');
  const found = `cgroup v${h.version}: ${required} (informative: ${informative})`;
  if (!h.problem) {
    const enabling = h.version === 1 ? '' : h.systemd ? '; systemd enables them in its scopes' : '; Prism enables them in its own subtree';
    return { name: 'cgroups', status: 'ok', detail: `${found}${enabling}` };
  }
  return { name: 'cgroups', status: severity(ctx.cfg, ['oci', 'microvm']), detail: `${found}: ${h.problem}`, fix: `${DOCS}#cgroups, docs/runtimes.md "Host cgroups"` };
}

/**
 * Who makes the tasks' cgroups. On v2 with systemd as PID 1 they are systemd scopes made through runc's
 * systemd cgroup driver, which talks to systemd's private socket.
 */
export async function checkCgroupDriver(ctx: DoctorContext): Promise<Check> {
  const pid1 = (await ctx.sys.readFile('/proc/1/comm'))?.trim() || 'unknown';
  const placement = taskCgroups('prism', ctx.cgroups).placement;
  if (placement === 'cgroupfs') {
    const why = ctx.cgroups.version === 1 ? 'cgroup v1' : `cgroup v2 and PID 1 (${pid1}) is not systemd`;
    return { name: 'cgroup driver', status: 'ok', detail: `cgroupfs: Prism makes its tasks' cgroups itself (${why})` };
  }
  const socket = await ctx.sys.stat(SYSTEMD_PRIVATE_SOCKET);
  if (socket?.kind === 'socket') {
    return { name: 'cgroup driver', status: 'ok', detail: `systemd: tasks go into systemd scopes (runc --systemd-cgroup) through ${SYSTEMD_PRIVATE_SOCKET}` };
  }
  return {
    name: 'cgroup driver',
    status: severity(ctx.cfg, ['oci']),
    detail: `PID 1 is systemd (${pid1}) on cgroup v2, but its private socket ${SYSTEMD_PRIVATE_SOCKET} is missing: runc's systemd cgroup driver cannot make scopes`,
    fix: `run prismd where systemd's /run/systemd is visible (not in a container without it); systemctl status should answer (${DOCS}#cgroup-driver)`,
  };
}
