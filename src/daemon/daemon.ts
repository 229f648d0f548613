import { chmod, mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { buildApi } from '../api/server.js';
import { PrismError, isPrismError } from '../core/errors.js';
import type { Logger } from '../service/logger.js';
import { TokenService } from '../service/token-service.js';
import type { RuntimeName, RuntimeProbeInfo } from '../core/types.js';
import { LocalImageStore } from '../images/local-image-store.js';
import { RegistryClient } from '../images/registry/registry-client.js';
import { RegistryPuller } from '../images/registry/pull.js';
import type { RuntimeDriver } from '../runtime/driver.js';
import { MicrovmDriver } from '../runtime/microvm/microvm-driver.js';
import { DockerDriver } from '../runtime/docker/docker-driver.js';
import { OciDriver } from '../runtime/oci/oci-driver.js';
import { LinuxNetworkManager } from '../net/linux/linux-network-manager.js';
import { EtcdStore } from '../store/etcd/etcd-store.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { LocalVolumeStore } from '../volumes/local/local-volume-store.js';
import type { Store } from '../store/store.js';
import type { DaemonConfig } from './config.js';
import { startNode } from './node-wiring.js';
import { loadTls } from './tls.js';
import { loadNodeIdentity } from './node-identity.js';
import { loadRegistryAuths } from './registry-config.js';
import { initBinaryPath, packageVersion } from './package-info.js';
import { acquirePidLock } from './pid-lock.js';
import { DEFAULT_PROCESS_LIMITS } from '../service/process-service.js';

/** The admin token's file in the data dir, written on a cluster's first start. */
export const ADMIN_TOKEN_FILE = 'admin-token';

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
export function pickAuto(drivers: Map<RuntimeName, RuntimeDriver>, info: RuntimeProbeInfo[]): RuntimeName | undefined {
  const vm = info.find((r) => r.name === 'microvm');
  if (drivers.has('microvm') && vm?.details?.accelerator === 'kvm') return 'microvm';
  // docker is never chosen here: a daemon that found an engine must not move sandboxes into it unasked.
  return drivers.has('oci') ? 'oci' : undefined;
}

/**
 * First start of a cluster (no token anywhere): create the admin token, keep it in the data dir
 * (mode 0600) and print it once. Nodes joining a cluster that has tokens create none.
 */
async function bootstrapAdminToken(tokens: TokenService, dataDir: string, log: Logger): Promise<void> {
  if (!tokens.empty()) return;
  let t;
  try {
    t = await tokens.create('admin');
  } catch (e) {
    if (isPrismError(e, 'ALREADY_EXISTS')) return; // another node of the cluster was first
    throw e;
  }
  const file = join(dataDir, ADMIN_TOKEN_FILE);
  await writeFile(file, `${t.token}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  log.info({ file, tokenId: t.id }, 'created the admin API token');
  process.stderr.write(`prismd: created the admin API token (printed once; also in ${file}, mode 0600):\n${t.token}\n`);
}

async function openStore(cfg: DaemonConfig): Promise<Store> {
  if (cfg.store.kind === 'etcd') {
    return EtcdStore.connect({ endpoints: cfg.store.endpoints, ...(cfg.store.tls ? { tls: cfg.store.tls } : {}) });
  }
  // Watch history keeps values (exec records among them): 2000 events bound it to ~256 MiB at worst.
  return SqliteStore.open(join(cfg.dataDir, 'store.db'), { historyLimit: 2000 });
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
  let store: Store;
  try {
    store = await openStore(cfg);
  } catch (e) {
    await releaseLock();
    throw e;
  }
  try {
    const auths = await loadRegistryAuths(cfg.registryAuthFile);
    const registry = new RegistryClient({ insecure: cfg.insecureRegistries, auths });
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
      // Never the default under --runtime=auto (pickAuto): only for nodes or sandboxes that ask for it.
      new DockerDriver({
        stateDir: join(cfg.dataDir, 'runtime', 'docker'),
        node: ident.id,
        initBinary: initBinaryPath(),
        ...(cfg.dockerHost ? { dockerHost: cfg.dockerHost } : {}),
        // The engine keeps no credentials (the docker CLI sends them with each pull): Prism sends its own.
        registryAuths: auths,
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
    // One nft table per daemon (named after the node), so daemons sharing a host never touch each other's rules.
    const net = new LinuxNetworkManager({
      stateDir: join(cfg.dataDir, 'net'),
      table: `prism_${ident.id.replace(/^node-/, '').slice(0, 8)}`,
      pool: cfg.sandboxCidr,
      dnsUpstream: cfg.sandboxDns,
      logger: log,
    });
    const host = cfg.apiHost.includes(':') ? `[${cfg.apiHost}]` : cfg.apiHost;
    const tls = await loadTls(cfg.tls, cfg.dataDir, cfg.advertise ? new URL(cfg.advertise).hostname : cfg.apiHost);
    const scheme = tls ? 'https' : 'http';
    let url = `${scheme}://${host}:${cfg.apiPort}`;
    const advertised = () => cfg.advertise ?? (['0.0.0.0', '[::]'].includes(host) ? url.replace(host, os.hostname()) : url);
    const node = await startNode({
      store, id: ident.id, name: ident.name, version, dataDir: cfg.dataDir, address: advertised(),
      images, drivers, runtimeInfo, net, volumes: new LocalVolumeStore(join(cfg.dataDir, 'volumes')),
      defaults: { image: cfg.defaultImage, runtime: defaultRuntime, cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
      labels: cfg.labels, capacity: cfg.capacity, placement: cfg.placement,
      nodeTtlMs: cfg.nodeTtlMs, scheduleTimeoutMs: cfg.scheduleTimeoutMs, fileLimits: { maxFileBytes: cfg.maxFileBytes },
      execLimits: { recordBytes: 64 * 1024, recordsPerSandbox: 100, maxTimeoutSec: 86400 },
      processLimits: { ...DEFAULT_PROCESS_LIMITS, maxPerSandbox: cfg.maxProcesses, bufferBytes: cfg.processBufferBytes },
      watchdogMs: 5000,
      defaultUser: cfg.defaultUser,
      log,
    });
    let tokens: TokenService | undefined;
    if (cfg.auth === 'token') {
      tokens = new TokenService(store, log);
      await tokens.start();
      await bootstrapAdminToken(tokens, cfg.dataDir, log);
    } else {
      log.warn({ api: cfg.apiHost }, 'API authentication is OFF (--auth none): anyone who can reach the API can run code');
    }
    const app = await buildApi(
      { sandboxes: node.sandboxes, exec: node.exec, pty: node.pty, processes: node.processes, files: node.files, nodes: node.nodes, images: node.images, volumes: node.volumes, version, nodeId: ident.id, ...(tokens ? { tokens } : {}) },
      { logger: log, bodyLimit: 16 * 1024 * 1024, maxImportBytes: 64 * 1024 ** 3, ...(tls ? { tls } : {}) });
    await app.listen({ host: cfg.apiHost, port: cfg.apiPort });
    const bound = app.server.address();
    if (bound && typeof bound === 'object' && bound.port !== cfg.apiPort) {
      url = `${scheme}://${host}:${bound.port}`; // --api HOST:0 picks a free port (tests)
      await node.setAddress(advertised());
    }
    if (tls) log.info({ ca: tls.caFile }, 'serving HTTPS; clients trust the CA with prismctl --ca FILE');
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
        await node.stop({ leave: true });
        tokens?.stop();
        for (const d of candidates) await d.close().catch(() => undefined);
        await net.close();
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
