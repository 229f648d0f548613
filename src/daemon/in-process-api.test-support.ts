import { tmpdir } from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { LazySerializers } from '../api/lazy-serializers.js';
import { buildApi } from '../api/server.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { silentLogger } from '../service/logger.js';
import { DEFAULT_PROCESS_LIMITS, type ProcessLimits } from '../service/process-service.js';
import type { Store } from '../store/store.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { VolumeStore } from '../volumes/volume-store.js';
import { startNode, type NodeServices } from './node-wiring.js';

const IMAGE = 'prism.local/base:test';

export interface InProcessNode {
  url: string;
  node: NodeServices;
  app: FastifyInstance;
  /** Closes the API and stops the node (the store is the caller's). */
  close(): Promise<void>;
}

/**
 * FOR TESTS: one node's real API routes and services on `store` and the fake driver, listening on
 * loopback without auth at the address it announces; several on one store make a cluster in process.
 */
export async function startInProcessNode(opts: {
  store: Store;
  id: string;
  name?: string;
  dataDir?: string;
  volumes?: VolumeStore;
  labels?: Record<string, string>;
  nodeTtlMs?: number;
  directCreate?: boolean;
  processLimits?: Partial<ProcessLimits>;
  serializers?: LazySerializers;
}): Promise<InProcessNode> {
  const { store, id } = opts;
  const node = await startNode({
    store, id, name: opts.name ?? id, version: 'test', dataDir: opts.dataDir ?? tmpdir(), address: 'http://127.0.0.1:0',
    images: oneImageStore(IMAGE, { digest: 'sha256:' + 'ef'.repeat(32), layerDirs: ['/layers/0'] }),
    drivers: new Map([['oci', new FakeDriver()]]), runtimeInfo: [], ...(opts.volumes ? { volumes: opts.volumes } : {}),
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    labels: opts.labels ?? {}, capacity: {}, placement: 'spread', nodeTtlMs: opts.nodeTtlMs ?? 5000, scheduleTimeoutMs: 5000,
    execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600 },
    processLimits: { ...DEFAULT_PROCESS_LIMITS, ...opts.processLimits },
    watchdogMs: 60_000, log: silentLogger, ...(opts.directCreate === undefined ? {} : { directCreate: opts.directCreate }),
  });
  const app = await buildApi(
    { sandboxes: node.sandboxes, exec: node.exec, pty: node.pty, processes: node.processes, files: node.files, nodes: node.nodes, images: node.images, volumes: node.volumes, metrics: node.metrics, lifecycle: node.lifecycle, snapshots: node.snapshots, version: 'test', nodeId: id, leader: () => node.membership.leader(), e2b: { defaultImage: IMAGE, maxTimeoutSec: 3600 } },
    { logger: silentLogger, bodyLimit: 1 << 20, maxImportBytes: 1 << 20, ...(opts.serializers ? { serializers: opts.serializers } : {}) },
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  await node.setAddress(url);
  return {
    url,
    node,
    app,
    async close() {
      await app.close();
      await node.stop();
    },
  };
}

/** FOR TESTS: a lone node (startInProcessNode) on an in-memory store of its own, so SDK and CLI tests run against the real server without root. */
export async function startInProcessApi(opts: { processLimits?: Partial<ProcessLimits> } = {}): Promise<{ url: string; node: NodeServices; close(): Promise<void> }> {
  const store = SqliteStore.open(':memory:');
  const n = await startInProcessNode({ store, id: 'node-test', name: 'test', ...(opts.processLimits ? { processLimits: opts.processLimits } : {}) });
  return {
    url: n.url,
    node: n.node,
    async close() {
      await n.close();
      store.close();
    },
  };
}
