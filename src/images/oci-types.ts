import { PrismError } from '../core/errors.js';
import { assertDigest } from './content/content-store.js';
import type { ImageConfig } from './image-store.js';

/** OCI (and Docker schema 2) media types, descriptors, manifests and configs, with strict checks. */

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
} as const;

// Docker's v2 schema has the same shape as OCI's, so `docker save` output is accepted as well.
export const MANIFEST_TYPES = new Set<string>([MEDIA_TYPES.ociManifest, 'application/vnd.docker.distribution.manifest.v2+json']);
export const INDEX_TYPES = new Set<string>([MEDIA_TYPES.ociIndex, 'application/vnd.docker.distribution.manifest.list.v2+json']);
export const GZIP_LAYER_TYPES = new Set<string>([MEDIA_TYPES.ociLayerGzip, 'application/vnd.docker.image.rootfs.diff.tar.gzip']);
export const TAR_LAYER_TYPES = new Set<string>([MEDIA_TYPES.ociLayer, 'application/vnd.docker.image.rootfs.diff.tar']);
export const ZSTD_LAYER_TYPES = new Set<string>(['application/vnd.oci.image.layer.v1.tar+zstd']);

/** The host's architecture in OCI (GOARCH) spelling. */
export function hostArchitecture(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return map[process.arch] ?? process.arch;
}

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string };
  annotations?: Record<string, string>;
}

export interface OciManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface OciConfig {
  created?: string;
  os?: string;
  architecture?: string;
  config?: { Env?: string[] | null; WorkingDir?: string; User?: string; Entrypoint?: string[] | null; Cmd?: string[] | null };
  rootfs?: { type?: string; diff_ids?: string[] };
}

export interface IndexFile {
  schemaVersion: 1;
  refs: Record<string, string>;
}

export function bad(message: string): PrismError {
  return new PrismError('INVALID_ARGUMENT', message);
}

export function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

export function checkDescriptor(d: unknown, what: string): Descriptor {
  const desc = d as Descriptor;
  if (typeof desc !== 'object' || desc === null || typeof desc.digest !== 'string' || !Number.isSafeInteger(desc.size) || desc.size < 0) {
    throw bad(`${what}: malformed descriptor (needs digest and size)`);
  }
  if (!desc.digest.startsWith('sha256:')) throw bad(`${what}: unsupported digest algorithm in ${desc.digest}`);
  assertDigest(desc.digest);
  return desc;
}

export function checkManifest(m: unknown, digest: string): OciManifest {
  const man = m as OciManifest;
  if (typeof man !== 'object' || man === null || man.schemaVersion !== 2) throw bad(`manifest ${digest}: schemaVersion must be 2`);
  if (man.mediaType !== undefined && !MANIFEST_TYPES.has(man.mediaType)) {
    throw bad(`manifest ${digest}: unsupported media type ${man.mediaType}`);
  }
  checkDescriptor(man.config, `manifest ${digest} config`);
  if (!Array.isArray(man.layers) || man.layers.length === 0) throw bad(`manifest ${digest}: has no layers`);
  man.layers.forEach((l, i) => {
    checkDescriptor(l, `manifest ${digest} layer ${i}`);
    const type = l.mediaType ?? '';
    if (!GZIP_LAYER_TYPES.has(type) && !TAR_LAYER_TYPES.has(type) && !ZSTD_LAYER_TYPES.has(type)) {
      throw bad(`manifest ${digest} layer ${i}: unsupported media type ${JSON.stringify(type)} (tar, tar+gzip or tar+zstd only)`);
    }
  });
  return man;
}

export function checkConfig(c: unknown, man: OciManifest, digest: string): OciConfig {
  const cfg = c as OciConfig;
  if (typeof cfg !== 'object' || cfg === null) throw bad(`config ${digest}: not an object`);
  const diffIds = cfg.rootfs?.diff_ids;
  if (cfg.rootfs?.type !== 'layers' || !isStringArray(diffIds)) throw bad(`config ${digest}: rootfs must be {type: "layers", diff_ids: [...]}`);
  if (diffIds.length !== man.layers.length) {
    throw bad(`config ${digest}: ${diffIds.length} diff_ids for ${man.layers.length} layers`);
  }
  diffIds.forEach((d) => assertDigest(d));
  const inner = cfg.config ?? {};
  for (const key of ['Env', 'Entrypoint', 'Cmd'] as const) {
    if (inner[key] != null && !isStringArray(inner[key])) throw bad(`config ${digest}: config.${key} must be a list of strings`);
  }
  return cfg;
}

export function imageConfig(cfg: OciConfig): ImageConfig {
  const c = cfg.config ?? {};
  const out: ImageConfig = { env: c.Env ?? [] };
  if (c.WorkingDir) out.workingDir = c.WorkingDir;
  if (c.User) out.user = c.User;
  if (c.Entrypoint) out.entrypoint = c.Entrypoint;
  if (c.Cmd) out.cmd = c.Cmd;
  return out;
}

