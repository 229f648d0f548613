import type { RuntimeName, RuntimeProbeInfo } from '../../core/types.js';
import type { CgroupHost } from '../../runtime/cgroups/cgroups.js';
import type { AccelVerdict } from '../../runtime/microvm/accel-probe.js';
import type { GuestFiles } from '../../runtime/microvm/guest-files.js';
import type { DaemonConfig } from '../config.js';
import type { HostSystem } from './host-system.js';

/**
 * One line of `prismd doctor`. `fail`: prismd as configured cannot start or cannot run sandboxes
 * (doctor then exits 1); `warn`: something works less well or not at all for some sandboxes; `ok`.
 * `fix` (a command or a doc) is given with every warn and fail.
 */
export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
  fix?: string;
}

export type CheckStatus = 'ok' | 'warn' | 'fail';

/** What the checks look at. Everything that touches the host is behind `sys` or gathered once here. */
export interface DoctorContext {
  cfg: DaemonConfig;
  /** The environment prismd would see (DOCKER_HOST names an engine outside the flags). */
  env: NodeJS.ProcessEnv;
  sys: HostSystem;
  cgroups: CgroupHost;
  /** Each driver's own probe (runtime-candidates.ts), as prismd gets them at start. */
  runtimes: RuntimeProbeInfo[];
  /** The microvm driver's QEMU + KVM boot test (accel-probe.ts), for these guest files. */
  accelerator(files: GuestFiles): Promise<AccelVerdict>;
  /** Where guest/agent and guest/init are built (the initramfs is stale when they are newer). */
  packageRoot: string;
}

export type DoctorCheck = (ctx: DoctorContext) => Promise<Check>;

export const DOCS = 'docs/doctor.md';

/** The runtimes this configuration may make the default: the one asked for, or auto's candidates. */
export function defaultCandidates(runtime: DaemonConfig['runtime']): RuntimeName[] {
  return runtime === 'auto' ? ['oci', 'microvm'] : [runtime];
}

/**
 * How bad a missing piece is: `fail` when every runtime the configuration may use as its default
 * needs it (so prismd cannot work), else `warn` (other runtimes, or some sandboxes, lose it).
 */
export function severity(cfg: DaemonConfig, neededBy: RuntimeName[]): 'fail' | 'warn' {
  return defaultCandidates(cfg.runtime).every((r) => neededBy.includes(r)) ? 'fail' : 'warn';
}

export function probeOf(ctx: DoctorContext, name: RuntimeName): RuntimeProbeInfo {
  return ctx.runtimes.find((r) => r.name === name) ?? { name, usable: false, reason: 'not probed' };
}
