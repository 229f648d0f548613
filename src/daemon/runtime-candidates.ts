import { join } from 'node:path';
import type { RuntimeName, RuntimeProbeInfo } from '../core/types.js';
import type { CgroupHost } from '../runtime/cgroups/cgroups.js';
import type { RuntimeDriver } from '../runtime/driver.js';
import { DockerDriver } from '../runtime/docker/docker-driver.js';
import { MicrovmDriver } from '../runtime/microvm/microvm-driver.js';
import { OciDriver } from '../runtime/oci/oci-driver.js';
import type { Logger } from '../service/logger.js';
import type { DaemonConfig } from './config.js';
import type { RegistryAuths } from './registry-config.js';
import { initBinaryPath } from './package-info.js';

/**
 * Every driver this prismd can run, built from its configuration. prismd and `prismd doctor` both
 * probe this list, so that they judge a host alike.
 */
export function runtimeCandidates(
  cfg: DaemonConfig,
  o: { nodeId: string; cgroupHost: CgroupHost; registryAuths?: RegistryAuths; logger?: Logger },
): RuntimeDriver[] {
  const logger = o.logger ? { logger: o.logger } : {};
  return [
    new OciDriver({ stateDir: join(cfg.dataDir, 'runtime', 'oci'), initBinary: initBinaryPath(), cgroupHost: o.cgroupHost, warmPool: cfg.warmPool, ...logger }),
    new MicrovmDriver({
      cgroupHost: o.cgroupHost,
      stateDir: join(cfg.dataDir, 'runtime', 'microvm'),
      guestDir: cfg.guestDir,
      imageDiskCache: join(cfg.imagesDir, 'disks'),
      initBinary: initBinaryPath(),
      accelCacheDir: cfg.guestDir,
      snapshots: cfg.microvmSnapshots,
      warmPool: cfg.warmPool,
      vmm: cfg.vmm,
      ...(cfg.firecrackerBin ? { firecrackerBinary: cfg.firecrackerBin } : {}),
      ...(cfg.kernel ? { kernel: cfg.kernel } : {}),
      ...logger,
    }),
    // Never the default under --runtime=auto (pickAuto): only for nodes or sandboxes that ask for it.
    new DockerDriver({
      stateDir: join(cfg.dataDir, 'runtime', 'docker'),
      node: o.nodeId,
      initBinary: initBinaryPath(),
      warmPool: cfg.warmPool,
      ...(cfg.dockerHost ? { dockerHost: cfg.dockerHost } : {}),
      // The engine keeps no credentials (the docker CLI sends them with each pull): Prism sends its own.
      ...(o.registryAuths ? { registryAuths: o.registryAuths } : {}),
      ...logger,
    }),
  ];
}

/** Each driver's probe, one after the other (the microvm probe may boot a VM once per host). */
export async function probeRuntimes(candidates: RuntimeDriver[]): Promise<RuntimeProbeInfo[]> {
  const info: RuntimeProbeInfo[] = [];
  for (const d of candidates) {
    const p = await d.probe();
    info.push({ name: d.name, usable: p.usable, ...(p.reason ? { reason: p.reason } : {}), ...(p.details ? { details: p.details } : {}) });
  }
  return info;
}

/**
 * `--runtime=auto`: a microVM (a kernel per sandbox) where hardware virtualisation works, else oci.
 * Under software emulation (TCG) microVMs work but boot in seconds, so they are never the silent
 * default; docker is never picked silently either.
 */
export function pickAuto(info: RuntimeProbeInfo[]): RuntimeName | undefined {
  const usable = (name: RuntimeName) => info.find((r) => r.name === name && r.usable);
  if (usable('microvm')?.details?.accelerator === 'kvm') return 'microvm';
  // docker is never chosen here: a daemon that found an engine must not move sandboxes into it unasked.
  return usable('oci') ? 'oci' : undefined;
}

/** The node's default runtime, or why the configuration cannot have one on this host. */
export function chooseDefaultRuntime(requested: RuntimeName | 'auto', info: RuntimeProbeInfo[]): { runtime: RuntimeName } | { problem: string } {
  if (requested !== 'auto') {
    const r = info.find((i) => i.name === requested);
    if (!r) return { problem: `runtime ${requested} is not implemented in this version (available: ${info.map((i) => i.name).join(', ')})` };
    return r.usable ? { runtime: requested } : { problem: `runtime ${requested} is not usable on this host: ${r.reason ?? 'its probe gave no reason'}` };
  }
  const runtime = pickAuto(info);
  if (runtime) return { runtime };
  const why = info.filter((i) => i.name !== 'docker').map((i) => `${i.name}: ${i.usable ? autoSkipped(i) : i.reason ?? 'not usable'}`);
  return { problem: `no usable runtime on this host for --runtime auto (${why.join('; ')})` };
}

function autoSkipped(i: RuntimeProbeInfo): string {
  return `usable only without KVM (${i.details?.accelerator ?? 'no accelerator'}), which auto never picks: ask for it with --runtime ${i.name}`;
}
