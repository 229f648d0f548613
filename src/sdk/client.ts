import type { NewToken, NodeInfo, Sandbox, SandboxStatus, Snapshot, TokenInfo } from '../core/types.js';
import type { CreateSandboxWire, LifecycleEventWire } from '../core/wire.js';
import { PrismApiError, connectionError, errorFromResponse } from './errors.js';
import { DEFAULT_URL, normalizeUrl } from './config-url.js';
import type { SocketOpening } from './socket.js';
import { ImagesApi } from './images.js';
import { VolumesApi } from './volumes.js';
import { SandboxHandle, type ApiTransport } from './sandbox-handle.js';
import { readNdjson } from './wire.js';

export interface PrismOptions {
  /** Daemon address, e.g. `http://127.0.0.1:8008`; `host:port` without a scheme means http. */
  url?: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  /** Replaces the global fetch (tests, proxies, instrumentation). */
  fetch?: typeof fetch;
  /**
   * PEM certificate(s) to trust for an `https://` daemon with a private CA (prismd `--tls auto`
   * keeps it in `<data-dir>/tls/ca.crt`). The system roots are used otherwise. Certificates are
   * always verified.
   */
  ca?: string | Uint8Array;
}

/**
 * What differs between Node and a browser (./node-platform.ts, ./browser.ts): how a private CA is
 * trusted, and how a WebSocket is opened with the token.
 */
export interface SdkPlatform {
  /** A fetch that trusts `ca` (PEM). */
  fetchTrusting(ca: string | Uint8Array): typeof fetch;
  /** Opens a WebSocket to `url`; `what` names the call in errors. */
  openSocket(url: string, opts: { token?: string; ca?: string | Uint8Array; baseUrl: string; what: string }): Promise<SocketOpening>;
}

/** One etcd member of the cluster (`prism.cluster.members()`). */
export interface EtcdMember {
  id: string;
  /** The node's name; empty while the member has not started yet. */
  name: string;
  peerUrls: string[];
  clientUrls: string[];
  /** Joining: replicates, does not vote yet. */
  learner: boolean;
  healthy: boolean;
}

export interface HealthInfo {
  status: 'ok';
  node: string;
  version: string;
}

export interface ClusterInfo {
  version: string;
  /** Id of the node that answered. */
  node: string;
  nodes: number;
  nodesAlive: number;
  nodesDead: number;
  /** Id and name of the node running the scheduler; empty while no leader is elected. */
  leader: string;
  leaderName: string;
  /** Of the node that answered. */
  uptimeSec: number;
  sandboxes: { total: number; byStatus: Partial<Record<SandboxStatus, number>> };
}

/** Body of `POST /sandboxes` (docs/api.md); the daemon fills in what is left out. */
export type CreateSandboxOptions = CreateSandboxWire;

/**
 * A lifecycle event (`prism.events()`): a sandbox's `created`, each new status, `deleted`; or
 * `node-dead` (no `sandboxId`; `node` and `nodeName` say which node).
 */
export type LifecycleEvent = LifecycleEventWire;
export type LifecycleEventType = LifecycleEvent['type'];

export interface EventsOptions {
  /** Only this sandbox (id or name). */
  sandbox?: string;
  /** Only these types. */
  types?: LifecycleEventType[];
  /** Ends the stream (the iterator then finishes without an error). */
  signal?: AbortSignal;
  /** Called once the server streams: every event from then on is delivered. */
  onOpen?: () => void;
}

export { DEFAULT_URL, normalizeUrl } from './config-url.js';

class HttpTransport implements ApiTransport {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;
  readonly #ca: string | Uint8Array | undefined;
  readonly #platform: SdkPlatform;

  constructor(opts: PrismOptions, platform: SdkPlatform) {
    this.baseUrl = normalizeUrl(opts.url ?? DEFAULT_URL);
    this.#token = opts.token;
    this.#ca = opts.ca;
    this.#platform = platform;
    this.#fetch = opts.fetch ?? (opts.ca ? platform.fetchTrusting(opts.ca) : (input, init) => fetch(input, init));
  }

  async json<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.raw(method, path, body, 'application/json', signal);
    const text = await res.text();
    if (res.status === 204 || text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      throw new PrismApiError('INTERNAL', `${method} ${path}: the API answered with invalid JSON`, {
        status: res.status,
        cause: e,
      });
    }
  }

  async raw(method: string, path: string, body: unknown, accept: string, signal?: AbortSignal): Promise<Response> {
    return this.send(method, path, body === undefined ? undefined : JSON.stringify(body), 'application/json', accept, signal);
  }

  openSocket(path: string): Promise<SocketOpening> {
    const url = `${this.baseUrl.replace(/^http/, 'ws')}/api/v1${path}`;
    return this.#platform.openSocket(url, {
      ...(this.#token ? { token: this.#token } : {}),
      ...(this.#ca !== undefined ? { ca: this.#ca } : {}),
      baseUrl: this.baseUrl,
      what: `GET ${path.split('?')[0]}`,
    });
  }

  async upload<T>(method: string, path: string, body: Uint8Array | ReadableStream<Uint8Array>, contentType: string, signal?: AbortSignal): Promise<T> {
    const res = await this.send(method, path, body, contentType, 'application/json', signal);
    const text = await res.text();
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  private async send(
    method: string,
    path: string,
    body: string | Uint8Array | ReadableStream<Uint8Array> | undefined,
    contentType: string,
    accept: string,
    signal?: AbortSignal,
  ): Promise<Response> {
    const headers: Record<string, string> = { accept };
    if (body !== undefined) headers['content-type'] = contentType;
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let res: Response;
    try {
      const init: RequestInit & { duplex?: 'half' } = { method, headers, body: body as BodyInit | undefined, signal };
      // Streaming request bodies need half-duplex in Node's fetch.
      if (body instanceof ReadableStream) init.duplex = 'half';
      res = await this.#fetch(`${this.baseUrl}/api/v1${path}`, init);
    } catch (e) {
      if (signal?.aborted) throw e;
      throw connectionError(this.baseUrl, e);
    }
    if (!res.ok) throw await errorFromResponse(res, `${method} ${path}`);
    return res;
  }
}

/**
 * Client for one Prism daemon (any node of a cluster), on a given platform: `Prism` from the package
 * (Node) or from its browser build. Use those, not this class.
 *
 * `sandboxes.list()` returns {@link SandboxHandle}s, not plain records, so a listed sandbox can be acted
 * on directly; the record is in `handle.info`, and `JSON.stringify(handles)` gives the records.
 * Every call rejects with {@link PrismApiError} on failure.
 */
export class PrismClient {
  readonly #api: HttpTransport;

  readonly nodes: {
    list(): Promise<NodeInfo[]>;
    get(idOrName: string): Promise<NodeInfo>;
    /** Forgets a dead node's record; FAILED_PRECONDITION while it is alive or still has sandboxes. */
    remove(idOrName: string): Promise<void>;
  };

  readonly images: ImagesApi;

  readonly volumes: VolumesApi;

  /** The cluster's membership (docs/cluster.md, "Forming a cluster"). */
  readonly cluster: {
    /** The token `prismd --join` presents; made on first use. Admin tokens only. */
    joinToken(): Promise<string>;
    /** Replaces the join token; the old one stops working at once. Admin tokens only. */
    rotateJoinToken(): Promise<string>;
    /** etcd members run by prismd (`--cluster-init`, `--join`), with their health; empty otherwise. */
    members(): Promise<EtcdMember[]>;
  };

  /** API tokens: admin tokens only (PERMISSION_DENIED for the others). */
  readonly tokens: {
    /**
     * The returned `token` is shown once; the server keeps only a hash. `admin`: it may also manage
     * tokens, remove nodes and read the join token.
     */
    create(name: string, opts?: { admin?: boolean }): Promise<NewToken>;
    list(): Promise<TokenInfo[]>;
    /** Revokes by id or name; the token stops working at once. */
    revoke(idOrName: string): Promise<void>;
  };

  /** Snapshots (`sb.snapshot()` takes one; `sandboxes.create({snapshot})` creates from one). */
  readonly snapshots: {
    list(): Promise<Snapshot[]>;
    get(id: string): Promise<Snapshot>;
    /** FAILED_PRECONDITION while a sandbox created from it exists. */
    delete(id: string): Promise<void>;
  };

  readonly sandboxes: {
    /** Resolves once the sandbox is `running`. */
    create(opts?: CreateSandboxOptions): Promise<SandboxHandle>;
    /** Oldest first; only those carrying all of `metadata`'s labels, and in one of `status` when given. */
    list(filter?: { metadata?: Record<string, string>; status?: SandboxStatus[] }): Promise<SandboxHandle[]>;
    /** Exact id or exact name. */
    get(idOrName: string): Promise<SandboxHandle>;
  };

  constructor(opts: PrismOptions, platform: SdkPlatform) {
    const api = new HttpTransport(opts, platform);
    this.#api = api;
    this.nodes = {
      list: async () => (await api.json<{ nodes: NodeInfo[] }>('GET', '/nodes')).nodes,
      get: (idOrName) => api.json<NodeInfo>('GET', `/nodes/${encodeURIComponent(idOrName)}`),
      remove: (idOrName) => api.json<void>('DELETE', `/nodes/${encodeURIComponent(idOrName)}`),
    };
    this.images = new ImagesApi(api);
    this.volumes = new VolumesApi(api);
    this.cluster = {
      joinToken: async () => (await api.json<{ token: string }>('GET', '/cluster/join-token')).token,
      rotateJoinToken: async () => (await api.json<{ token: string }>('POST', '/cluster/join-token')).token,
      members: async () => (await api.json<{ members: EtcdMember[] }>('GET', '/cluster/members')).members,
    };
    this.tokens = {
      create: (name, opts = {}) => api.json<NewToken>('POST', '/tokens', opts.admin ? { name, admin: true } : { name }),
      list: async () => (await api.json<{ tokens: TokenInfo[] }>('GET', '/tokens')).tokens,
      revoke: (idOrName) => api.json<void>('DELETE', `/tokens/${encodeURIComponent(idOrName)}`),
    };
    this.snapshots = {
      list: async () => (await api.json<{ snapshots: Snapshot[] }>('GET', '/snapshots')).snapshots,
      get: (id) => api.json<Snapshot>('GET', `/snapshots/${encodeURIComponent(id)}`),
      delete: (id) => api.json<void>('DELETE', `/snapshots/${encodeURIComponent(id)}`),
    };
    this.sandboxes = {
      create: async (o = {}) => new SandboxHandle(api, await api.json<Sandbox>('POST', '/sandboxes', o)),
      list: async (filter = {}) => {
        const q = new URLSearchParams();
        for (const [k, v] of Object.entries(filter.metadata ?? {})) q.append('metadata', `${k}=${v}`);
        if (filter.status?.length) q.set('status', filter.status.join(','));
        const path = q.size ? `/sandboxes?${q}` : '/sandboxes';
        return (await api.json<{ sandboxes: Sandbox[] }>('GET', path)).sandboxes.map((s) => new SandboxHandle(api, s));
      },
      get: async (idOrName) =>
        new SandboxHandle(api, await api.json<Sandbox>('GET', `/sandboxes/${encodeURIComponent(idOrName)}`)),
    };
  }

  /** The daemon address in use, normalized (`http://host:port`). */
  get url(): string {
    return this.#api.baseUrl;
  }

  /**
   * Lifecycle events from now on, as they happen, until `signal` aborts or the server goes (then the
   * iterator ends). Every node streams the events of the whole cluster's sandboxes and nodes.
   */
  async *events(opts: EventsOptions = {}): AsyncGenerator<LifecycleEvent> {
    const q = new URLSearchParams();
    if (opts.sandbox) q.set('sandbox', opts.sandbox);
    if (opts.types?.length) q.set('type', opts.types.join(','));
    const query = q.size ? `?${q}` : '';
    let res: Response;
    try {
      res = await this.#api.raw('GET', `/events${query}`, undefined, 'application/x-ndjson', opts.signal);
    } catch (e) {
      if (opts.signal?.aborted) return;
      throw e;
    }
    opts.onOpen?.();
    try {
      for await (const ev of readNdjson(res, opts.signal)) yield ev as LifecycleEvent;
    } catch (e) {
      if (!opts.signal?.aborted) throw e;
    }
  }

  health(): Promise<HealthInfo> {
    return this.#api.json<HealthInfo>('GET', '/health');
  }

  clusterInfo(): Promise<ClusterInfo> {
    return this.#api.json<ClusterInfo>('GET', '/cluster/info');
  }
}
