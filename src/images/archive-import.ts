import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join, normalize } from 'node:path';
import { x as untar } from 'tar';
import { PrismError } from '../core/errors.js';
import type { ContentStore } from './content/content-store.js';
import { MEDIA_TYPES } from './oci-types.js';

/**
 * Reading image archives without a registry: `docker save` tars (manifest.json + config + layer tars)
 * and OCI image layout tars (oci-layout + index.json + blobs/). Both are unpacked to a temp dir first;
 * node-tar refuses entries that would land outside it.
 */

export type ArchiveContent =
  | { kind: 'oci-layout'; dir: string; names: string[] }
  | { kind: 'docker'; images: { manifestDigest: string; repoTags: string[] }[] };

interface DockerManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

export async function extractArchive(file: string, dir: string): Promise<void> {
  try {
    await untar({ file, cwd: dir, strict: true, preserveOwner: false });
  } catch (e) {
    throw new PrismError('INVALID_ARGUMENT', `${file} is not a readable tar archive: ${(e as Error).message}`, { cause: e });
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Inside `dir` only: archive paths come from the archive, which we do not trust. */
function inside(dir: string, rel: string): string {
  const p = normalize(join(dir, rel));
  if (!p.startsWith(`${dir}/`)) throw new PrismError('INVALID_ARGUMENT', `archive path escapes the archive: ${rel}`);
  return p;
}

/**
 * Classifies an extracted archive. A docker-save archive has its blobs turned into an OCI image in the
 * content store (config as is; each layer tar stored uncompressed, so its digest is its diff_id).
 */
export async function readArchive(dir: string, content: ContentStore): Promise<ArchiveContent> {
  if (await exists(join(dir, 'manifest.json'))) {
    const entries = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as DockerManifestEntry[];
    if (!Array.isArray(entries) || entries.length === 0) throw new PrismError('INVALID_ARGUMENT', 'manifest.json lists no images');
    const images = [];
    for (const e of entries) {
      if (typeof e.Config !== 'string' || !Array.isArray(e.Layers)) throw new PrismError('INVALID_ARGUMENT', 'manifest.json entry lacks Config or Layers');
      const config = await content.putFile(inside(dir, e.Config));
      const layers = [];
      for (const l of e.Layers) {
        const blob = await content.putStream(createReadStream(inside(dir, l)));
        layers.push({ mediaType: MEDIA_TYPES.ociLayer, digest: blob.digest, size: blob.size });
      }
      const manifest = {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociManifest,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.size },
        layers,
      };
      const m = await content.putBuffer(Buffer.from(JSON.stringify(manifest)));
      images.push({ manifestDigest: m.digest, repoTags: e.RepoTags ?? [] });
    }
    return { kind: 'docker', images };
  }
  if (await exists(join(dir, 'oci-layout'))) {
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests?: { annotations?: Record<string, string> }[] };
    const names = (index.manifests ?? []).map((m) => m.annotations?.['io.containerd.image.name'] ?? m.annotations?.['org.opencontainers.image.ref.name'] ?? '').filter(Boolean);
    return { kind: 'oci-layout', dir, names };
  }
  throw new PrismError('INVALID_ARGUMENT', 'the archive is neither a docker save archive (manifest.json) nor an OCI image layout (oci-layout)');
}
