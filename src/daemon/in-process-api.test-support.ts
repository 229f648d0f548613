import { tmpdir } from 'node:os';
import { buildApi } from '../api/server.js';
import { oneImageStore } from '../images/fake/one-image-store.js';
import { FakeDriver } from '../runtime/fake/fake-driver.js';
import { silentLogger } from '../service/logger.js';
import { DEFAULT_PROCESS_LIMITS, type ProcessLimits } from '../service/process-service.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { startNode, type NodeServices } from './node-wiring.js';

const IMAGE = 'prism.local/base:test';

/**
 * FOR TESTS: the real API routes and services of one node on an in-memory store and the fake driver,
 * listening on loopback without auth, so SDK and CLI tests run against the real server without root.
 */
export async function startInProcessApi(opts: { processLimits?: Partial<ProcessLimits> } = {}): Promise<{ url: string; node: NodeServices; close(): Promise<void> }> {
  const store = SqliteStore.open(':memory:');
  const node = await startNode({
    store, id: 'node-test', name: 'test', version: 'test', dataDir: tmpdir(), address: 'http://127.0.0.1:0',
    images: oneImageStore(IMAGE, { digest: 'sha256:' + 'ef'.repeat(32), layerDirs: ['/layers/0'] }),
    drivers: new Map([['oci', new FakeDriver()]]), runtimeInfo: [],
    defaults: { image: IMAGE, runtime: 'oci', cpus: 1, memoryMb: 512, pidsLimit: 256, diskMb: 2048, maxOpenFiles: 4096 },
    labels: {}, capacity: {}, placement: 'spread', nodeTtlMs: 5000, scheduleTimeoutMs: 5000,
    execLimits: { recordBytes: 1 << 20, recordsPerSandbox: 100, maxTimeoutSec: 3600 },
    processLimits: { ...DEFAULT_PROCESS_LIMITS, ...opts.processLimits },
    watchdogMs: 60_000, log: silentLogger,
  });
  await node.nodes.publish();
  const app = await buildApi(
    { sandboxes: node.sandboxes, exec: node.exec, pty: node.pty, processes: node.processes, files: node.files, nodes: node.nodes, images: node.images, volumes: node.volumes, metrics: node.metrics, lifecycle: node.lifecycle, snapshots: node.snapshots, version: 'test', nodeId: 'node-test' },
    { logger: silentLogger, bodyLimit: 1 << 20, maxImportBytes: 1 << 20 },
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    node,
    async close() {
      await app.close();
      await node.stop();
      store.close();
    },
  };
}
