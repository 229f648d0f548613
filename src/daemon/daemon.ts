import { chmod, mkdir, open, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import pino from 'pino';
import { buildApi } from '../api/server.js';
import { PromMetrics } from '../service/prometheus.js';
import { PrismError, isPrismError } from '../core/errors.js';
import type { Logger } from '../service/logger.js';
import { TokenService } from '../service/token-service.js';
import type { RuntimeName } from '../core/types.js';
import { LocalImageStore } from '../images/local-image-store.js';
import { RegistryClient } from '../images/registry/registry-client.js';
import { RegistryPuller } from '../images/registry/pull.js';
import type { RuntimeDriver } from '../runtime/driver.js';
import { probeCgroups } from '../runtime/cgroups/probe.js';
import { LinuxNetworkManager } from '../net/linux/linux-network-manager.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { LocalVolumeStore } from '../volumes/local/local-volume-store.js';
import type { Store } from '../store/store.js';
import { ClusterJoin } from '../cluster/join-service.js';
import { startManagedEtcd, type ManagedEtcd } from '../cluster/managed-etcd.js';
import { EndpointRefresh } from '../cluster/endpoint-refresh.js';
import type { DaemonConfig } from './config.js';
import { startNode } from './node-wiring.js';
import { loadTls, type TlsMaterial } from './tls.js';
import { loadNodeIdentity } from './node-identity.js';
import { loadRegistryAuths } from './registry-config.js';
import { initBinaryPath, packageVersion } from './package-info.js';
import { useSpawnServer } from '../runtime/command.js';
import { acquirePidLock } from './pid-lock.js';
import { chooseDefaultRuntime, probeRuntimes, runtimeCandidates } from './runtime-candidates.js';
import { startupRefusal } from './startup-refusal.js';
import { listenProblem, tryListen } from './listen-probe.js';
import { stderrIsJournal } from './journal.js';
import { DEFAULT_PROCESS_LIMITS } from '../service/process-service.js';

/** The admin token's file in the data dir, written on a cluster's first start. */
export const ADMIN_TOKEN_FILE = 'admin-token';

export interface RunningDaemon {
  url: string;
  nodeId: string;
  close(): Promise<void>;
}

/**
 * First start of a cluster (no token anywhere): create the admin token, keep it in the data dir
 * (mode 0600) and print it once. Nodes joining a cluster that has tokens create none.
 */
async function bootstrapAdminToken(tokens: TokenService, dataDir: string, log: Logger): Promise<void> {
  if (!tokens.empty()) return;
  let t;
  try {
    t = await tokens.create('admin', { admin: true });
  } catch (e) {
    if (isPrismError(e, 'ALREADY_EXISTS')) return; // another node of the cluster was first
    throw e;
  }
  const file = join(dataDir, ADMIN_TOKEN_FILE);
  await writeFile(file, `${t.token}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  log.info({ file, tokenId: t.id }, 'created the admin API token');
  // Under systemd stderr is the journal, which keeps it and which the adm group reads: not printed there.
  if (stderrIsJournal()) process.stderr.write(`prismd: created the admin API token, in ${file} (mode 0600)\n`);
  else process.stderr.write(`prismd: created the admin API token (printed once; also in ${file}, mode 0600):\n${t.token}\n`);
}

interface OpenedStore {
  store: Store;
  /** Who may join, and how (src/cluster): absent on a node alone on SQLite. */
  cluster?: ClusterJoin;
  /** This node's own etcd member (`--cluster-init`, `--join`). */
  managed?: ManagedEtcd;
  /** Keeps the endpoints in `<data-dir>/cluster.json` current (with `managed`). */
  refresh?: EndpointRefresh;
}

async function openStore(cfg: DaemonConfig, nodeName: string, log: Logger, tls: TlsMaterial | undefined): Promise<OpenedStore> {
  const c = cfg.store;
  if (c.kind === 'sqlite') {
    // Watch history keeps values (exec records among them): 2000 events bound it to ~256 MiB at worst.
    return { store: await SqliteStore.open(join(cfg.dataDir, 'store.db'), { historyLimit: 2000 }) };
  }
  // Loaded only for a cluster: etcd3 and gRPC are a third of prismd's start-up on a single node.
  const { EtcdStore } = await import('../store/etcd/etcd-store.js');
  if (c.kind === 'etcd') {
    const store = await EtcdStore.connect({ endpoints: c.endpoints, ...(c.tls ? { tls: c.tls } : {}) });
    return { store, cluster: new ClusterJoin(store, undefined, { voters: 0, log, externalEndpoints: c.endpoints }) };
  }
  // With --tls the members speak TLS to each other and to clients, with the cluster CA's certificates.
  const memberTls = tls ? { caFile: tls.caFile, certFile: tls.certFile, keyFile: tls.keyFile } : undefined;
  const managed = await startManagedEtcd(cfg.dataDir, nodeName, c, log, memberTls);
  try {
    const store = await EtcdStore.connect({ endpoints: managed.endpoints, ...(memberTls ? { tls: { ca: memberTls.caFile, cert: memberTls.certFile, key: memberTls.keyFile } } : {}) });
    const members = store.members();
    // The next start finds the cluster through whichever members are up then, however many came and went.
    const cluster: ClusterJoin = new ClusterJoin(store, members, { voters: c.voters, log, onMembershipChange: () => refresh.now(), ...(memberTls ? { tls: memberTls } : {}) });
    const refresh: EndpointRefresh = new EndpointRefresh(() => cluster.memberList(), (endpoints) => managed.saveEndpoints(endpoints), log);
    if (c.mode === 'init') await cluster.recordClusterToken(managed.clusterToken);
    await refresh.now();
    refresh.start();
    return { store, cluster, managed, refresh };
  } catch (e) {
    await managed.stop();
    throw e;
  }
}

/**
 * Stdout, or the log file, opened here first: pino's asynchronous destination reports a file it cannot
 * open from its exit hook, as a stack trace instead of a message.
 */
async function logDestination(file: string | undefined): Promise<pino.DestinationStream> {
  if (!file) return pino.destination(1);
  try {
    await mkdir(dirname(file), { recursive: true });
    await (await open(file, 'a')).close();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new PrismError('FAILED_PRECONDITION', `the log file ${file} cannot be written: ${code} (choose another with --log-file)`, { cause: e });
  }
  return pino.destination({ dest: file, mkdir: true, sync: false });
}

/**
 * The composition root: config in, wired services out. The only place that knows which
 * implementation sits behind each seam.
 */
export async function startDaemon(cfg: DaemonConfig): Promise<RunningDaemon> {
  // Before anything is made (store, token): a taken port is the commonest reason a start fails.
  const port = cfg.apiPort === 0 ? 'free' : await tryListen(cfg.apiHost, cfg.apiPort);
  if (port !== 'free') throw startupRefusal(listenProblem(cfg.apiHost, cfg.apiPort, port));
  await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
    throw startupRefusal(`the data dir ${cfg.dataDir} cannot be created: ${e.code ?? e.message} (choose another with --data-dir)`, e);
  });
  const log = pino({ level: cfg.logLevel, base: { pid: process.pid } }, await logDestination(cfg.logFile));
  const releaseLock = await acquirePidLock(cfg.dataDir).catch((e: unknown) => {
    if (isPrismError(e)) throw e;
    throw startupRefusal(`the data dir ${cfg.dataDir} is not writable: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, e);
  });
  const version = packageVersion();
  const ident = await loadNodeIdentity(cfg.dataDir, cfg.name);
  let opened: OpenedStore;
  let tls: TlsMaterial | undefined;
  try {
    // Before the store: an etcd member prismd runs uses the node's certificate too.
    const etcdHosts = cfg.store.kind === 'managed-etcd' ? [cfg.store.peer.host, cfg.store.client.host] : [];
    tls = await loadTls(cfg.tls, cfg.dataDir, cfg.advertise ? new URL(cfg.advertise).hostname : cfg.apiHost, etcdHosts);
    opened = await openStore(cfg, ident.name, log, tls);
  } catch (e) {
    await releaseLock();
    throw e;
  }
  const { store, cluster, managed, refresh } = opened;
  try {
    const auths = await loadRegistryAuths(cfg.registryAuthFile);
    const registry = new RegistryClient({ insecure: cfg.insecureRegistries, auths });
    const images = new LocalImageStore({ root: cfg.imagesDir, puller: new RegistryPuller(registry), fixupBinary: initBinaryPath() });
    // One look at the host's cgroups (v1, or v2 with or without systemd) for every driver that uses them.
    // Host commands (runc, mount, cp) start from a small helper instead of a fork of this process.
    useSpawnServer(initBinaryPath());
    const candidates = runtimeCandidates(cfg, { nodeId: ident.id, cgroupHost: probeCgroups(), registryAuths: auths, logger: log });
    const runtimeInfo = await probeRuntimes(candidates);
    const drivers = new Map<RuntimeName, RuntimeDriver>();
    for (const [i, d] of candidates.entries()) {
      const p = runtimeInfo[i]!;
      if (p.usable) drivers.set(d.name, d);
      else log.warn({ runtime: d.name, reason: p.reason }, `runtime ${d.name} is not usable on this host`);
    }
    const choice = chooseDefaultRuntime(cfg.runtime, runtimeInfo);
    if ('problem' in choice) throw startupRefusal(choice.problem);
    const defaultRuntime = choice.runtime;
    // One nft table per daemon (named after the node), so daemons sharing a host never touch each other's rules.
    const net = new LinuxNetworkManager({
      stateDir: join(cfg.dataDir, 'net'),
      table: `prism_${ident.id.replace(/^node-/, '').slice(0, 8)}`,
      pool: cfg.sandboxCidr,
      dnsUpstream: cfg.sandboxDns,
      logger: log,
    });
    const host = cfg.apiHost.includes(':') ? `[${cfg.apiHost}]` : cfg.apiHost;
    const scheme = tls ? 'https' : 'http';
    let url = `${scheme}://${host}:${cfg.apiPort}`;
    const advertised = () => cfg.advertise ?? (['0.0.0.0', '[::]'].includes(host) ? url.replace(host, os.hostname()) : url);
    // The node's Prometheus metrics read its services at scrape time (GET /metrics; docs/metrics.md).
    let services: Awaited<ReturnType<typeof startNode>> | undefined;
    const prom = new PromMetrics({
      nodeId: ident.id,
      node: () => services!.nodes.get(ident.id),
      sandboxes: () => services!.repo.listSandboxes(),
      usage: () => services?.metrics.current() ?? [],
    });
    const node = await startNode({
      store: prom.timedStore(store), telemetry: prom, id: ident.id, name: ident.name, version, dataDir: cfg.dataDir, address: advertised(),
      images, drivers, runtimeInfo, net, volumes: new LocalVolumeStore(join(cfg.dataDir, 'volumes')),
      defaults: { image: cfg.defaultImage, runtime: defaultRuntime, cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
      labels: cfg.labels, capacity: cfg.capacity, placement: cfg.placement, directCreate: cfg.directCreate,
      nodeTtlMs: cfg.nodeTtlMs, scheduleTimeoutMs: cfg.scheduleTimeoutMs, fileLimits: { maxFileBytes: cfg.maxFileBytes },
      execLimits: { recordBytes: 64 * 1024, recordsPerSandbox: 100, maxTimeoutSec: 86400 },
      processLimits: { ...DEFAULT_PROCESS_LIMITS, maxPerSandbox: cfg.maxProcesses, bufferBytes: cfg.processBufferBytes },
      watchdogMs: 5000,
      metrics: cfg.metrics,
      pausedTtlMs: cfg.pausedTtlMs,
      defaultUser: cfg.defaultUser,
      log,
    });
    services = node;
    let tokens: TokenService | undefined;
    if (cfg.auth === 'token') {
      tokens = new TokenService(store, log);
      await tokens.start();
      await bootstrapAdminToken(tokens, cfg.dataDir, log);
    } else {
      log.warn({ api: cfg.apiHost }, 'API authentication is OFF (--auth none): anyone who can reach the API can run code');
    }
    const app = await buildApi(
      { sandboxes: node.sandboxes, exec: node.exec, pty: node.pty, processes: node.processes, files: node.files, nodes: node.nodes, images: node.images, volumes: node.volumes, metrics: node.metrics, lifecycle: node.lifecycle, snapshots: node.snapshots, version, nodeId: ident.id, leader: () => node.membership.leader(), ...(tokens ? { tokens } : {}), ...(cluster ? { cluster } : {}),
        prometheus: { metrics: prom, auth: cfg.metricsAuth },
        e2b: { defaultImage: cfg.defaultImage, maxTimeoutSec: 86400, ...(cfg.e2bDomain ? { domain: cfg.e2bDomain } : {}) } },
      { logger: log, bodyLimit: 16 * 1024 * 1024, maxImportBytes: 64 * 1024 ** 3, console: cfg.console, ...(tls ? { tls } : {}) });
    await app.listen({ host: cfg.apiHost, port: cfg.apiPort }).catch((e: NodeJS.ErrnoException) => {
      throw startupRefusal(listenProblem(cfg.apiHost, cfg.apiPort, e.code ?? e.message), e);
    });
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
        useSpawnServer(undefined);
        await refresh?.stop();
        await store.close();
        await managed?.stop();
        await releaseLock();
        log.flush();
      },
    };
  } catch (e) {
    await refresh?.stop();
    await store.close();
    await managed?.stop();
    await releaseLock();
    throw e;
  }
}
