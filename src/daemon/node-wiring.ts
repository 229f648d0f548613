import { join } from 'node:path';
import { LifecycleEvents } from '../service/lifecycle-events.js';
import type { Telemetry } from '../service/telemetry.js';
import type { NodeCapacity, RuntimeName, RuntimeProbeInfo } from '../core/types.js';
import type { ImageStore } from '../images/image-store.js';
import type { NetworkManager } from '../net/network-manager.js';
import type { RuntimeDriver } from '../runtime/driver.js';
import { Scheduler } from '../scheduler/scheduler.js';
import type { PlacementStrategy } from '../scheduler/placement.js';
import { DEFAULT_DIRECT_SLACK_SANDBOXES, DirectCreate } from '../service/direct-create.js';
import { ExecService, type ExecLimits } from '../service/exec-service.js';
import { PtyService } from '../service/pty-service.js';
import { DEFAULT_MAX_FILE_BYTES, FileService, type FileLimits } from '../service/file-service.js';
import { ImageService } from '../service/image-service.js';
import { DEFAULT_PROCESS_LIMITS, ProcessService, type ProcessLimits } from '../service/process-service.js';
import type { Logger } from '../service/logger.js';
import { Membership } from '../service/membership.js';
import { DEFAULT_SANDBOX_USER, NodeAgent } from '../service/node-agent.js';
import { NodeService } from '../service/node-service.js';
import { SandboxEvents } from '../service/sandbox-events.js';
import { SnapshotService } from '../service/snapshot-service.js';
import { TaskWatchdog } from '../service/task-watchdog.js';
import { DEFAULT_METRICS, SandboxMetrics, type SandboxMetricsOptions } from '../service/sandbox-metrics.js';
import { SandboxRepo } from '../service/sandbox-repo.js';
import { SandboxService, type SandboxDefaults } from '../service/sandbox-service.js';
import type { Store } from '../store/store.js';
import { VolumeService } from '../service/volume-service.js';
import type { VolumeStore } from '../volumes/volume-store.js';

export interface NodeWiring {
  store: Store;
  id: string;
  name: string;
  version: string;
  dataDir: string;
  /** The URL other nodes reach this node's API at (may change once the API has bound its port). */
  address: string;
  images: ImageStore;
  drivers: ReadonlyMap<RuntimeName, RuntimeDriver>;
  runtimeInfo: RuntimeProbeInfo[];
  /** Per-sandbox networks; absent where the host cannot give sandboxes one. */
  net?: NetworkManager;
  /** This node's volume data (`<data-dir>/volumes`); absent: this node holds no volumes. */
  volumes?: VolumeStore;
  defaults: SandboxDefaults;
  labels: Record<string, string>;
  capacity: Partial<NodeCapacity>;
  placement: PlacementStrategy;
  /**
   * Creates this node would be given by placement anyway are made here in one store write, without the
   * scheduler (src/service/direct-create.ts). Default true; `--direct-create off` sends every create to the scheduler.
   */
  directCreate?: boolean;
  nodeTtlMs: number;
  scheduleTimeoutMs: number;
  execLimits: ExecLimits;
  /** Background processes (default {@link DEFAULT_PROCESS_LIMITS}). */
  processLimits?: ProcessLimits;
  /** Default: 1 GiB per file read or written. */
  fileLimits?: FileLimits;
  /** How often running tasks are checked for having died. */
  watchdogMs: number;
  /** `--paused-ttl` in ms (0 or absent: paused sandboxes are kept). */
  pausedTtlMs?: number;
  /** Sampling of sandbox usage (default {@link DEFAULT_METRICS}). */
  metrics?: SandboxMetricsOptions;
  /** User of commands in images that name none (default `65534:65534`, nobody; `root` to allow root). */
  defaultUser?: string;
  /** Where creates, execs and image pulls report their durations (default: nowhere). */
  telemetry?: Telemetry;
  log: Logger;
}

export interface NodeServices {
  repo: SandboxRepo;
  /** The node's one watch on sandbox records, which the agent, the scheduler and waits share. */
  events: SandboxEvents;
  agent: NodeAgent;
  nodes: NodeService;
  sandboxes: SandboxService;
  exec: ExecService;
  pty: PtyService;
  processes: ProcessService;
  files: FileService;
  images: ImageService;
  volumes: VolumeService;
  metrics: SandboxMetrics;
  /** Lifecycle events of every sandbox and node of the cluster, live (GET /events). */
  lifecycle: LifecycleEvents;
  snapshots: SnapshotService;
  scheduler: Scheduler;
  membership: Membership;
  /** Direct creates (undefined with directCreate false). */
  direct?: DirectCreate;
  setAddress(url: string): Promise<void>;
  /**
   * Stops this node's services. `leave` (a clean shutdown) gives up the lease so the cluster sees the
   * node gone at once; without it the lease simply runs out, as after a crash. Tasks keep running.
   */
  stop(opts?: { leave?: boolean }): Promise<void>;
}

/**
 * Wires and starts one node's services on a Store: the same for a single node on SQLite and for a
 * member of an etcd cluster. Start-up order: publish the node record, recover this node's tasks, then
 * join (membership, maybe leadership) and take assignments.
 */
export async function startNode(w: NodeWiring): Promise<NodeServices> {
  let address = w.address;
  const repo = new SandboxRepo(w.store);
  const volumes = new VolumeService(repo, w.volumes, w.id, w.log);
  const agent = new NodeAgent(w.id, repo, w.images, w.drivers, w.log, { defaultUser: w.defaultUser ?? DEFAULT_SANDBOX_USER, volumeImage: (name, hostKernel) => volumes.image(name, hostKernel), snapshotsDir: join(w.dataDir, 'snapshots'), ...(w.pausedTtlMs ? { pausedTtlMs: w.pausedTtlMs } : {}), ...(w.telemetry ? { telemetry: w.telemetry } : {}) }, w.net);
  const nodes = new NodeService(
    {
      id: w.id, name: w.name, address, version: w.version, runtimes: [...w.drivers.keys()], defaultRuntime: w.defaults.runtime,
      runtimeInfo: w.runtimeInfo, dataDir: w.dataDir, labels: w.labels, capacity: w.capacity,
    },
    repo,
    w.log,
  );
  const events = new SandboxEvents(repo, w.log);
  const scheduler = new Scheduler(repo, events, w.log, { strategy: w.placement, batchMax: 100, maxTxnOps: 128 });
  const direct = w.directCreate === false ? undefined : new DirectCreate(repo, w.id, (sb, terms) => agent.createDirect(sb, terms), w.log, {
    strategy: w.placement, slackSandboxes: DEFAULT_DIRECT_SLACK_SANDBOXES, memberRevision: () => membership.memberRevision(),
  });
  const sandboxes = new SandboxService(repo, events, agent, w.defaults, w.log, { scheduleMs: w.scheduleTimeoutMs, startMs: 15 * 60_000 }, w.telemetry, scheduler, direct);
  const exec = new ExecService(sandboxes, agent, repo, w.execLimits, w.log, w.telemetry);
  const pty = new PtyService(sandboxes, agent);
  const processes = new ProcessService(sandboxes, exec, agent, w.processLimits ?? DEFAULT_PROCESS_LIMITS, w.log);
  const files = new FileService(sandboxes, agent, w.fileLimits ?? { maxFileBytes: DEFAULT_MAX_FILE_BYTES });
  const images = new ImageService(w.images, repo, w.log, w.telemetry);
  const snapshots = new SnapshotService(repo, sandboxes, agent, w.images, w.log, join(w.dataDir, 'snapshots'));
  const feed = { listSandboxes: () => repo.listSandboxes(), onChange: (fn: Parameters<SandboxEvents['onChange']>[0]) => events.onChange(fn) };
  const metrics = new SandboxMetrics(w.id, feed, agent, w.log, w.metrics ?? DEFAULT_METRICS);
  const lifecycle = new LifecycleEvents(feed, repo, w.log);
  const watchdog = new TaskWatchdog(feed, agent, w.log, { intervalMs: w.watchdogMs, sweepEvery: 12 });
  const membership = new Membership(w.id, () => address, repo, w.log, { ttlMs: w.nodeTtlMs, campaign: true });
  membership.onElected = (term) => void scheduler.start(term).catch((e) => w.log.error({ err: e }, 'scheduler start failed'));
  membership.onDeposed = () => scheduler.stop();
  membership.onRejoin = () => void agent.reconcileAfterRejoin().catch((e) => w.log.error({ err: e }, 'reconciling after rejoin failed'));

  await nodes.start();
  await volumes.reconcile();
  await agent.recover();
  await events.start();
  await lifecycle.start();
  await metrics.start();
  await membership.start();
  // The leader may have marked this node's sandboxes lost after recover() reattached them and before the
  // node announced itself (a dead node's sweep, or a new leader's): now that it is a member again, settle those.
  await agent.reconcileAfterRejoin();
  await agent.watchAssignments(events);
  await watchdog.start();
  await direct?.start();
  return {
    repo, events, agent, nodes, sandboxes, exec, pty, processes, files, images, volumes, metrics, lifecycle, snapshots, scheduler, membership, direct,
    async setAddress(url) {
      address = url;
      nodes.setAddress(url);
      await nodes.publish();
      await membership.announce();
    },
    async stop(opts = {}) {
      if (opts.leave) await membership.stop();
      else membership.halt();
      scheduler.stop();
      direct?.stop();
      metrics.stop();
      lifecycle.stop();
      watchdog.stop();
      events.stop();
      nodes.stop();
      processes.close();
      agent.close();
    },
  };
}
