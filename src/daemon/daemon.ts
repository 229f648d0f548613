import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { buildApi } from '../api/server.js';
import { PrismError } from '../core/errors.js';
import type { RuntimeName, RuntimeProbeInfo } from '../core/types.js';
import { LocalImageStore } from '../images/local-image-store.js';
import { RegistryClient } from '../images/registry/registry-client.js';
import { RegistryPuller } from '../images/registry/pull.js';
import type { RuntimeDriver } from '../runtime/driver.js';
import { MicrovmDriver } from '../runtime/microvm/microvm-driver.js';
import { OciDriver } from '../runtime/oci/oci-driver.js';
import { ExecService } from '../service/exec-service.js';
import { ImageService } from '../service/image-service.js';
import { NodeAgent } from '../service/node-agent.js';
import { NodeService } from '../service/node-service.js';
import { SandboxRepo } from '../service/sandbox-repo.js';
import { SandboxService } from '../service/sandbox-service.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { DaemonConfig } from './config.js';
import { loadNodeIdentity } from './node-identity.js';
import { loadRegistryAuths } from './registry-config.js';
import { initBinaryPath, packageVersion } from './package-info.js';
import { acquirePidLock } from './pid-lock.js';

export interface RunningDaemon {
  url: string;
  nodeId: string;
  close(): Promise<void>;
}

/**
 * `--runtime=auto`: a microVM (a kernel per sandbox) where hardware virtualisation works, else oci.
 * Under software emulation (TCG) microVMs work but boot in seconds, so they are never the silent
 * default; docker is never picked silently either.
 */
function pickAuto(drivers: Map<RuntimeName, RuntimeDriver>, info: RuntimeProbeInfo[]): RuntimeName | undefined {
  const vm = info.find((r) => r.name === 'microvm');
  if (drivers.has('microvm') && vm?.details?.accelerator === 'kvm') return 'microvm';
  return drivers.has('oci') ? 'oci' : undefined;
}

/**
 * The composition root: config in, wired services out. The only place that knows which
 * implementation sits behind each seam.
 */
export async function startDaemon(cfg: DaemonConfig): Promise<RunningDaemon> {
  await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 });
  const log = pino(
    { level: cfg.logLevel, base: { pid: process.pid } },
    cfg.logFile ? pino.destination({ dest: cfg.logFile, mkdir: true, sync: false }) : pino.destination(1),
  );
  const releaseLock = await acquirePidLock(cfg.dataDir);
  const version = packageVersion();
  const ident = await loadNodeIdentity(cfg.dataDir, cfg.name);
  // Watch history keeps values (exec records among them): 2000 events bound it to ~256 MiB at worst.
  const store = SqliteStore.open(join(cfg.dataDir, 'store.db'), { historyLimit: 2000 });
  try {
    const registry = new RegistryClient({ insecure: cfg.insecureRegistries, auths: await loadRegistryAuths(cfg.registryAuthFile) });
    const images = new LocalImageStore({ root: cfg.imagesDir, puller: new RegistryPuller(registry), fixupBinary: initBinaryPath() });
    const candidates: RuntimeDriver[] = [
      new OciDriver({ stateDir: join(cfg.dataDir, 'runtime', 'oci'), initBinary: initBinaryPath(), logger: log }),
      new MicrovmDriver({
        stateDir: join(cfg.dataDir, 'runtime', 'microvm'),
        guestDir: cfg.guestDir,
        imageDiskCache: join(cfg.imagesDir, 'disks'),
        accelCacheDir: cfg.guestDir,
        snapshots: cfg.microvmSnapshots,
        warmPool: cfg.warmPool,
        ...(cfg.firecrackerBin ? { firecrackerBinary: cfg.firecrackerBin } : {}),
        ...(cfg.kernel ? { kernel: cfg.kernel } : {}),
        logger: log,
      }),
    ];
    const drivers = new Map<RuntimeName, RuntimeDriver>();
    const runtimeInfo: RuntimeProbeInfo[] = [];
    for (const d of candidates) {
      const p = await d.probe();
      runtimeInfo.push({ name: d.name, usable: p.usable, ...(p.reason ? { reason: p.reason } : {}), ...(p.details ? { details: p.details } : {}) });
      if (p.usable) drivers.set(d.name, d);
      else log.warn({ runtime: d.name, reason: p.reason }, `runtime ${d.name} is not usable on this host`);
    }
    const defaultRuntime = cfg.runtime === 'auto' ? pickAuto(drivers, runtimeInfo) : cfg.runtime;
    if (defaultRuntime && !candidates.some((d) => d.name === defaultRuntime)) {
      throw new PrismError('FAILED_PRECONDITION', `runtime '${defaultRuntime}' is not implemented in this version yet (available: ${candidates.map((d) => d.name).join(', ')}); see docs/status.md`);
    }
    if (!defaultRuntime || !drivers.has(defaultRuntime)) {
      throw new PrismError(
        'FAILED_PRECONDITION',
        cfg.runtime === 'auto'
          ? 'no usable runtime on this host (see the warnings above)'
          : `runtime '${cfg.runtime}' is not usable on this host (usable: ${[...drivers.keys()].join(', ') || 'none'})`,
      );
    }
    const repo = new SandboxRepo(store);
    const agent = new NodeAgent(ident.id, repo, images, drivers, log);
    const host = cfg.apiHost.includes(':') ? `[${cfg.apiHost}]` : cfg.apiHost;
    let url = `http://${host}:${cfg.apiPort}`;
    const nodes = new NodeService(
      { ...ident, address: url, version, runtimes: [...drivers.keys()], defaultRuntime, runtimeInfo, dataDir: cfg.dataDir },
      repo,
      log,
    );
    const sandboxes = new SandboxService(
      repo,
      images,
      agent,
      { image: cfg.defaultImage, runtime: defaultRuntime, cpus: 1, memoryMb: 512, pidsLimit: 256 },
      log,
    );
    const exec = new ExecService(sandboxes, agent, repo, { recordBytes: 64 * 1024, recordsPerSandbox: 100, maxTimeoutSec: 86400 }, log);
    const imageService = new ImageService(images, repo, log);
    await nodes.start();
    await agent.recover();
    agent.startWatchdog(5000);
    const app = await buildApi({ sandboxes, exec, nodes, images: imageService, version, nodeId: ident.id },
      { logger: log, bodyLimit: 16 * 1024 * 1024, maxImportBytes: 64 * 1024 ** 3 },);
    await app.listen({ host: cfg.apiHost, port: cfg.apiPort });
    const bound = app.server.address();
    if (bound && typeof bound === 'object' && bound.port !== cfg.apiPort) {
      url = `http://${host}:${bound.port}`; // --api HOST:0 picks a free port (tests)
      nodes.setAddress(url);
      await nodes.publish();
    }
    log.info({ url, node: ident.id, name: ident.name, runtimes: [...drivers.keys()], defaultRuntime, dataDir: cfg.dataDir }, 'prismd ready');
    let closed = false;
    return {
      url,
      nodeId: ident.id,
      async close() {
        if (closed) return;
        closed = true;
        log.info('prismd shutting down; sandboxes keep running and are recovered on the next start');
        // In-flight requests (a long streamed exec) get a few seconds, then their connections are cut,
        // which kills their commands; the sandboxes themselves keep running.
        const grace = setTimeout(() => app.server.closeAllConnections(), 5000);
        await app.close();
        clearTimeout(grace);
        nodes.stop();
        agent.close();
        for (const d of candidates) await d.close().catch(() => undefined);
        await store.close();
        await releaseLock();
        log.flush();
      },
    };
  } catch (e) {
    await store.close();
    await releaseLock();
    throw e;
  }
}
