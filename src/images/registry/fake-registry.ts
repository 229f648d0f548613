import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { sha256Digest } from '../content/content-store.js';
import { MEDIA_TYPES } from '../oci-types.js';

/**
 * An in-process registry (distribution API subset: manifests and blobs by GET, a token endpoint) on
 * 127.0.0.1, for unit tests of the pull path. Not a registry for anything else: integration tests use
 * the real one. `intercept` lets a test answer any request itself (failures, tampering, redirects).
 */

export interface FakeRegistryOptions {
  /** `bearer`: token flow with `/token` as realm; `basic`: HTTP Basic; default none. */
  auth?: 'none' | 'bearer' | 'basic';
  /** user name -> password accepted by Basic auth and by the token endpoint. */
  users?: Record<string, string>;
  /** For `bearer`: whether the token endpoint hands out tokens without credentials; default true. */
  anonymous?: boolean;
  tokenExpiresIn?: number;
}

export interface FakeRequest {
  method: string;
  path: string;
  authorization?: string;
}

export interface FakeImage {
  manifestDigest: string;
  manifestBytes: Buffer;
  config: { digest: string; size: number };
  layers: { digest: string; size: number; bytes: Buffer }[];
}

type Interceptor = (req: IncomingMessage, res: ServerResponse, path: string) => boolean | Promise<boolean>;

export class FakeRegistry {
  readonly requests: FakeRequest[] = [];
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  intercept?: Interceptor;
  private readonly tokens = new Set<string>();

  private constructor(
    private readonly server: Server,
    private readonly opts: FakeRegistryOptions,
  ) {}

  static async start(opts: FakeRegistryOptions = {}): Promise<FakeRegistry> {
    const server = createServer();
    const reg = new FakeRegistry(server, opts);
    server.on('request', (req, res) => {
      reg.handle(req, res).catch(() => res.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return reg;
  }

  get host(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Requests for paths containing `fragment`. */
  count(fragment: string): number {
    return this.requests.filter((r) => r.path.includes(fragment)).length;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  putBlob(bytes: Buffer): { digest: string; size: number } {
    const digest = sha256Digest(bytes);
    this.blobs.set(digest, bytes);
    return { digest, size: bytes.length };
  }

  /** Stores a manifest under its digest and, when given, a tag. */
  putManifest(repo: string, tag: string | undefined, value: unknown, mediaType: string): { digest: string; size: number; bytes: Buffer } {
    const bytes = Buffer.isBuffer(value) ? value : Buffer.from(JSON.stringify(value));
    const digest = sha256Digest(bytes);
    this.manifests.set(`${repo}@${digest}`, { bytes, mediaType });
    if (tag !== undefined) this.manifests.set(`${repo}:${tag}`, { bytes, mediaType });
    return { digest, size: bytes.length, bytes };
  }

  /** An image of `layerSizes` random gzip-typed layers (their bytes are not real tars: pulling does not unpack). */
  addImage(repo: string, tag: string | undefined, o: { layerSizes?: number[]; architecture?: string } = {}): FakeImage {
    const layers = (o.layerSizes ?? [1000]).map((n) => {
      const bytes = randomBytes(n);
      return { ...this.putBlob(bytes), bytes };
    });
    const config = this.putBlob(
      Buffer.from(JSON.stringify({ os: 'linux', architecture: o.architecture ?? 'amd64', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } })),
    );
    const manifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, ...config },
      layers: layers.map((l) => ({ mediaType: MEDIA_TYPES.ociLayerGzip, digest: l.digest, size: l.size })),
    };
    const m = this.putManifest(repo, tag, manifest, MEDIA_TYPES.ociManifest);
    return { manifestDigest: m.digest, manifestBytes: m.bytes, config, layers };
  }

  addIndex(repo: string, tag: string, entries: { image: FakeImage; os: string; architecture: string; variant?: string }[]): { digest: string; bytes: Buffer } {
    const index = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: entries.map((e) => ({
        mediaType: MEDIA_TYPES.ociManifest,
        digest: e.image.manifestDigest,
        size: e.image.manifestBytes.length,
        platform: { os: e.os, architecture: e.architecture, ...(e.variant ? { variant: e.variant } : {}) },
      })),
    };
    return this.putManifest(repo, tag, index, MEDIA_TYPES.ociIndex);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://${this.host}`);
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname + url.search, authorization: req.headers.authorization });
    if (this.intercept && (await this.intercept(req, res, url.pathname))) return;
    if (url.pathname === '/token') return this.token(req, res, url);
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (m === null) return json(res, 404, { errors: [{ code: 'NOT_FOUND' }] });
    const [, repo, kind, reference] = m as unknown as [string, string, string, string];
    if (!this.authorized(req, res, repo)) return;
    if (kind === 'blobs') {
      const blob = this.blobs.get(reference);
      if (blob === undefined) return json(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry' }] });
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length, 'docker-content-digest': reference });
      res.end(blob);
      return;
    }
    const found = this.manifests.get(reference.startsWith('sha256:') ? `${repo}@${reference}` : `${repo}:${reference}`);
    if (found === undefined) return json(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
    res.writeHead(200, { 'content-type': found.mediaType, 'content-length': found.bytes.length, 'docker-content-digest': sha256Digest(found.bytes) });
    res.end(found.bytes);
  }

  private authorized(req: IncomingMessage, res: ServerResponse, repo: string): boolean {
    const auth = req.headers.authorization ?? '';
    if (this.opts.auth === 'bearer') {
      if (auth.startsWith('Bearer ') && this.tokens.has(auth.slice(7))) return true;
      res.setHeader('www-authenticate', `Bearer realm="http://${this.host}/token",service="fake-registry",scope="repository:${repo}:pull"`);
      json(res, 401, { errors: [{ code: 'UNAUTHORIZED' }] });
      return false;
    }
    if (this.opts.auth === 'basic') {
      if (this.validBasic(auth)) return true;
      res.setHeader('www-authenticate', 'Basic realm="fake-registry"');
      json(res, 401, { errors: [{ code: 'UNAUTHORIZED' }] });
      return false;
    }
    return true;
  }

  private validBasic(auth: string): boolean {
    if (!auth.startsWith('Basic ')) return false;
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon > 0 && this.opts.users?.[decoded.slice(0, colon)] === decoded.slice(colon + 1);
  }

  private token(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const auth = req.headers.authorization;
    const ok = auth !== undefined ? this.validBasic(auth) : this.opts.anonymous !== false;
    if (!ok || !url.searchParams.get('scope')) return json(res, 401, { errors: [{ code: 'UNAUTHORIZED' }] });
    const token = randomBytes(12).toString('hex');
    this.tokens.add(token);
    json(res, 200, { token, expires_in: this.opts.tokenExpiresIn ?? 300 });
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
