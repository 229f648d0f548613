import type { RuntimeName } from '../../core/types.js';
import { chooseDefaultRuntime } from '../runtime-candidates.js';
import { DOCS, probeOf, severity, type Check, type DoctorContext } from './check.js';

/** runc's version, from the oci driver's probe (which runs `runc --version` first). */
export async function checkRunc(ctx: DoctorContext): Promise<Check> {
  const p = probeOf(ctx, 'oci');
  if (p.details?.runc) return { name: 'runc', status: 'ok', detail: p.details.runc };
  return { name: 'runc', status: severity(ctx.cfg, ['oci']), detail: p.reason ?? 'runc does not run', fix: 'apt-get install runc (bash scripts/setup.sh installs it)' };
}

const RUNTIME_FIX: Record<RuntimeName, string> = {
  oci: 'see the root, cgroups, runc and overlayfs lines',
  microvm: 'see the root, cgroups, vmm, guest files and kvm lines',
  docker: 'start a Docker engine, or point --docker-host / DOCKER_HOST at one (docs/runtimes.md)',
};

function summary(details: Record<string, string> | undefined): string {
  return Object.entries(details ?? {}).map(([k, v]) => `${k} ${v}`).join('; ');
}

/**
 * A runtime as prismd sees it: its driver's own probe verdict. Fails when it is the runtime asked
 * for. A missing Docker engine is only information unless docker is asked for (or an engine was
 * named with --docker-host / DOCKER_HOST): most hosts have none and need none.
 */
export function checkRuntime(name: RuntimeName): (ctx: DoctorContext) => Promise<Check> {
  return async (ctx) => {
    const p = probeOf(ctx, name);
    const check = `runtime ${name}`;
    if (p.usable) return { name: check, status: 'ok', detail: `usable: ${summary(p.details)}` };
    const reason = p.reason ?? 'not usable';
    if (ctx.cfg.runtime === name) return { name: check, status: 'fail', detail: reason, fix: RUNTIME_FIX[name] };
    if (name === 'docker' && !ctx.cfg.dockerHost && !ctx.env.DOCKER_HOST) {
      return { name: check, status: 'ok', detail: `not used (only for --runtime docker or sandboxes that ask for it): ${reason}` };
    }
    return { name: check, status: 'warn', detail: `${reason} (sandboxes that ask for ${name} will fail)`, fix: RUNTIME_FIX[name] };
  };
}

/** What prismd would pick as the node's default runtime, exactly as it picks it (runtime-candidates.ts). */
export async function checkDefaultRuntime(ctx: DoctorContext): Promise<Check> {
  const choice = chooseDefaultRuntime(ctx.cfg.runtime, ctx.runtimes);
  if ('problem' in choice) return { name: 'default runtime', status: 'fail', detail: choice.problem, fix: `fix the lines above that fail or warn (${DOCS})` };
  return { name: 'default runtime', status: 'ok', detail: `${choice.runtime} (--runtime ${ctx.cfg.runtime})` };
}
