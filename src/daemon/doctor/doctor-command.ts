import type { Writable } from 'node:stream';
import { probeCgroups } from '../../runtime/cgroups/probe.js';
import { probeAccelerator } from '../../runtime/microvm/accel-probe.js';
import { defaultCmdline } from '../../runtime/microvm/guest-files.js';
import { resolveConfig, type DaemonConfig, type DaemonFlags } from '../config.js';
import { packageRoot } from '../package-info.js';
import { probeRuntimes, runtimeCandidates } from '../runtime-candidates.js';
import type { DoctorContext } from './check.js';
import { formatChecks, formatChecksJson, doctorExitCode, runChecks } from './doctor.js';
import { realHostSystem } from './host-system.js';

/** The QEMU binary the microvm driver runs (vm-launcher.ts's default; prismd has no flag for it). */
const QEMU_BINARY = 'qemu-system-x86_64';

/** The real host as prismd would see it with this configuration: the same drivers, probed the same way. */
export async function hostContext(cfg: DaemonConfig, env: NodeJS.ProcessEnv = process.env): Promise<DoctorContext> {
  const cgroups = probeCgroups();
  // The node id only labels a docker task's containers; probes make none under it.
  const candidates = runtimeCandidates(cfg, { nodeId: 'doctor', cgroupHost: cgroups });
  try {
    const runtimes = await probeRuntimes(candidates);
    return {
      cfg, env, sys: realHostSystem, cgroups, runtimes, packageRoot: packageRoot(),
      async accelerator(files) {
        const cmdline = await defaultCmdline({ tcg: false, pvh: files.pvh });
        return probeAccelerator(files, { stateDir: cfg.guestDir, qemuBinary: QEMU_BINARY, cmdline });
      },
    };
  } finally {
    for (const d of candidates) await d.close().catch(() => undefined);
  }
}

/** `prismd doctor [prismd's flags] [--json]`: prints the checks, returns the exit code. */
export async function doctorCommand(flags: DaemonFlags & { json?: boolean }, out: Writable = process.stdout): Promise<number> {
  const cfg = resolveConfig(flags, process.env);
  const checks = await runChecks(await hostContext(cfg));
  out.write(flags.json ? formatChecksJson(checks) : formatChecks(checks));
  return doctorExitCode(checks);
}
