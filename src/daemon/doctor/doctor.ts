import { asPrismError } from '../../core/errors.js';
import type { Check, DoctorCheck, DoctorContext } from './check.js';
import { checkApiPort } from './api-port-check.js';
import { checkCgroupDriver, checkCgroups } from './cgroup-checks.js';
import { checkDataDir, checkDiskSpace } from './data-dir-checks.js';
import { checkLoop, checkNftables, checkOverlay, checkVeth } from './kernel-checks.js';
import { checkGuestFiles, checkKvm, checkVmm } from './microvm-checks.js';
import { checkNode, checkRoot } from './process-checks.js';
import { checkDefaultRuntime, checkRunc, checkRuntime } from './runtime-checks.js';

/** Every check, in the order printed: the host, each runtime's parts, the daemon's own needs, then the verdicts. */
export const DOCTOR_CHECKS: readonly DoctorCheck[] = [
  checkRoot, checkNode, checkCgroups, checkCgroupDriver,
  checkRunc, checkOverlay, checkLoop, checkVeth, checkNftables,
  checkVmm, checkGuestFiles, checkKvm,
  checkDataDir, checkDiskSpace, checkApiPort,
  checkRuntime('oci'), checkRuntime('microvm'), checkRuntime('docker'), checkDefaultRuntime,
];

/**
 * Runs the checks one after another (the kvm check may boot a VM; parallel probes would compete for
 * the host's two cores). A check that throws is a bug in it: reported as a warning, not a host failure.
 */
export async function runChecks(ctx: DoctorContext, checks: readonly DoctorCheck[] = DOCTOR_CHECKS): Promise<Check[]> {
  const out: Check[] = [];
  for (const check of checks) {
    try {
      out.push(await check(ctx));
    } catch (e) {
      out.push({ name: check.name || 'check', status: 'warn', detail: `the check itself failed: ${asPrismError(e).message}`, fix: 'report this with the output of prismd doctor' });
    }
  }
  return out;
}

/** 1 when any check fails (prismd as configured cannot start or run sandboxes); warnings alone give 0. */
export function doctorExitCode(checks: Check[]): number {
  return checks.some((c) => c.status === 'fail') ? 1 : 0;
}

/** One line per check: status, name, what was found, and the fix of a warn or fail. */
export function formatChecks(checks: Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  const oneLine = (s: string) => s.replace(/\s*\n\s*/g, ' ');
  return checks
    .map((c) => `${c.status.padEnd(4)}  ${c.name.padEnd(width)}  ${oneLine(c.detail)}${c.fix && c.status !== 'ok' ? ` | fix: ${oneLine(c.fix)}` : ''}\n`)
    .join('');
}

export function formatChecksJson(checks: Check[]): string {
  return `${JSON.stringify({ exitCode: doctorExitCode(checks), checks }, null, 2)}\n`;
}
