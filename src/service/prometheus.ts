import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { NodeInfo, Sandbox } from '../core/types.js';
import type { CommitOp, KeyValue, Lease, PutOptions, Store, Watch, WatchEvent } from '../store/store.js';
import type { PrismError } from '../core/errors.js';
import type { SandboxUsage } from './sandbox-metrics.js';

/** What the node's gauges are read from at each scrape (the composition root wires the services). */
export interface PromSources {
  nodeId: string;
  /** This node's record: capacity and reservations. */
  node(): Promise<NodeInfo>;
  /** Every sandbox record (each node counts the ones it runs). */
  sandboxes(): Promise<Sandbox[]>;
  /** The usage sampler's newest sample of each sandbox this node runs (SandboxMetrics.current). */
  usage(): SandboxUsage[];
}

/** Seconds: from a fast exec (ms) to a create that pulls an image (a minute). */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * The node's Prometheus metrics (GET /metrics, docs/metrics.md): node capacity and reservations,
 * sandboxes by status and runtime, durations of creates, execs, image pulls, API requests and store calls, each
 * running sandbox's usage from the usage sampler, and the process's own metrics. Gauges of records
 * are read at scrape time, and per-sandbox series are rebuilt at each scrape, so a deleted sandbox's
 * series are gone at the next one (labels never grow without bound).
 */
export class PromMetrics {
  readonly registry = new Registry();
  private readonly createDuration: Histogram<'runtime' | 'outcome'>;
  private readonly execDuration: Histogram<'runtime'>;
  private readonly apiRequests: Counter<'method' | 'route' | 'status'>;
  private readonly apiDuration: Histogram<'method' | 'route'>;
  private readonly storeDuration: Histogram<'op' | 'outcome'>;
  private readonly pullDuration: Histogram<'store' | 'outcome'>;

  constructor(private readonly src: PromSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.registry.setDefaultLabels({ node: src.nodeId });
    this.createDuration = new Histogram({
      name: 'prism_sandbox_create_duration_seconds', help: 'Sandbox creates on this node, from the request to running or failed', labelNames: ['runtime', 'outcome'], buckets: DURATION_BUCKETS, registers,
    });
    this.execDuration = new Histogram({ name: 'prism_exec_duration_seconds', help: 'Commands run in sandboxes, from start to exit', labelNames: ['runtime'], buckets: DURATION_BUCKETS, registers });
    this.apiRequests = new Counter({ name: 'prism_api_requests_total', help: 'API requests served by this node, by route template and status', labelNames: ['method', 'route', 'status'], registers });
    this.apiDuration = new Histogram({ name: 'prism_api_request_duration_seconds', help: 'API request durations by route template', labelNames: ['method', 'route'], buckets: DURATION_BUCKETS, registers });
    this.storeDuration = new Histogram({
      name: 'prism_store_request_duration_seconds', help: 'Calls to the store (SQLite or etcd) by operation', labelNames: ['op', 'outcome'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers,
    });
    this.pullDuration = new Histogram({
      name: 'prism_image_pull_duration_seconds', help: 'Image pulls on this node, by the store that pulled (prism, or a runtime with its own images)', labelNames: ['store', 'outcome'],
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800], registers,
    });
    this.nodeGauges(registers);
    this.sandboxGauges(registers);
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  observeCreate(runtime: string, seconds: number, ok: boolean): void {
    this.createDuration.observe({ runtime, outcome: ok ? 'ok' : 'error' }, seconds);
  }

  observeExec(runtime: string, seconds: number): void {
    this.execDuration.observe({ runtime }, seconds);
  }

  observePull(store: string, seconds: number, ok: boolean): void {
    this.pullDuration.observe({ store, outcome: ok ? 'ok' : 'error' }, seconds);
  }

  /** `route` is the route's template (`/api/v1/sandboxes/:id`), never the URL: ids would be labels. */
  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.apiRequests.inc({ method, route, status: String(status) });
    this.apiDuration.observe({ method, route }, seconds);
  }

  /** The store with each call timed into prism_store_request_duration_seconds (watches and leases as they are). */
  timedStore(store: Store): Store {
    const timed = <T>(op: string, call: () => Promise<T>): Promise<T> => {
      const end = this.storeDuration.startTimer({ op });
      return call().then(
        (v) => (end({ outcome: 'ok' }), v),
        (e: unknown) => {
          end({ outcome: 'error' });
          throw e;
        },
      );
    };
    return {
      get: (key: string): Promise<KeyValue | undefined> => timed('get', () => store.get(key)),
      list: (prefix: string) => timed('list', () => store.list(prefix)),
      put: (key: string, value: string, opts?: PutOptions) => timed('put', () => store.put(key, value, opts)),
      delete: (key: string, opts?: { expectRevision?: number }) => timed('delete', () => store.delete(key, opts)),
      commit: (ops: CommitOp[]) => timed('commit', () => store.commit(ops)),
      revision: () => timed('revision', () => store.revision()),
      watch: (prefix: string, from: number, onEvent: (e: WatchEvent) => void, onError?: (e: PrismError) => void): Watch => store.watch(prefix, from, onEvent, onError),
      grantLease: (ttlMs: number): Promise<Lease> => timed('grantLease', () => store.grantLease(ttlMs)),
      close: () => store.close(),
    };
  }

  private nodeGauges(registers: Registry[]): void {
    const src = this.src;
    const values: [string, string, (n: NodeInfo) => number][] = [
      ['prism_node_capacity_cpus', 'CPUs this node offers to sandboxes', (n) => n.capacity.cpus],
      ['prism_node_capacity_memory_bytes', 'Memory this node offers to sandboxes', (n) => n.capacity.memoryMb * 2 ** 20],
      ['prism_node_capacity_sandboxes', 'Most sandboxes this node takes (0: no limit but CPU and memory)', (n) => n.capacity.maxSandboxes],
      ['prism_node_cpu_overcommit', 'How many times its CPUs placement may reserve', (n) => n.capacity.cpuOvercommit ?? 1],
      ['prism_node_memory_overcommit', 'How many times its memory placement may reserve', (n) => n.capacity.memoryOvercommit ?? 1],
      ['prism_node_reserved_cpus', 'CPUs reserved by the sandboxes placed on this node', (n) => n.reserved.cpus],
      ['prism_node_reserved_memory_bytes', 'Memory reserved by the sandboxes placed on this node', (n) => n.reserved.memoryMb * 2 ** 20],
      ['prism_node_reserved_sandboxes', 'Sandboxes placed on this node', (n) => n.reserved.sandboxes],
    ];
    // One read of the node record per scrape, shared by its gauges.
    let pending: Promise<NodeInfo> | undefined;
    const node = () => (pending ??= src.node().finally(() => setImmediate(() => (pending = undefined))));
    for (const [name, help, pick] of values) {
      new Gauge({
        name, help, registers,
        async collect() {
          this.set(pick(await node()));
        },
      });
    }
  }

  private sandboxGauges(registers: Registry[]): void {
    const src = this.src;
    new Gauge({
      name: 'prism_sandboxes', help: 'Sandboxes this node runs, by status and runtime', labelNames: ['status', 'runtime'], registers,
      async collect() {
        this.reset();
        for (const sb of await src.sandboxes()) if (sb.node === src.nodeId) this.inc({ status: sb.status, runtime: sb.runtime });
      },
    });
    const labels = ['sandbox', 'name', 'runtime'] as const;
    // `pick` gives undefined for a sandbox without that series (network bytes of one without a network).
    const perSandbox = (name: string, help: string, pick: (u: SandboxUsage) => number | undefined, counter = false) => {
      const collect = function (this: Gauge<(typeof labels)[number]> | Counter<(typeof labels)[number]>) {
        this.reset();
        for (const u of src.usage()) {
          const l = { sandbox: u.id, name: u.name, runtime: u.runtime };
          const v = pick(u);
          if (v === undefined) continue;
          if (this instanceof Counter) this.inc(l, v);
          else this.set(l, v);
        }
      };
      if (counter) new Counter({ name, help, labelNames: labels, registers, collect });
      else new Gauge({ name, help, labelNames: labels, registers, collect });
    };
    perSandbox('prism_sandbox_cpu_seconds_total', 'CPU time used by a sandbox since its task started (newest sample)', (u) => u.cpuSeconds, true);
    perSandbox('prism_sandbox_memory_bytes', 'Memory a sandbox uses (newest sample)', (u) => u.memoryBytes);
    perSandbox('prism_sandbox_memory_limit_bytes', "A sandbox's memory limit", (u) => u.memoryLimitBytes);
    perSandbox('prism_sandbox_pids', 'Processes in a sandbox (newest sample)', (u) => u.pids);
    perSandbox('prism_sandbox_disk_used_bytes', "Bytes used on a sandbox's writable disk (newest sample)", (u) => u.diskUsedBytes);
    perSandbox('prism_sandbox_network_receive_bytes_total', 'Bytes a sandbox with a network received since its link was made (newest sample)', (u) => u.network?.rxBytes, true);
    perSandbox('prism_sandbox_network_transmit_bytes_total', 'Bytes a sandbox with a network sent since its link was made (newest sample)', (u) => u.network?.txBytes, true);
  }
}
