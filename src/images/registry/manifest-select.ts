import { PrismError } from '../../core/errors.js';
import type { Platform } from '../image-store.js';
import { bad, checkDescriptor, hostArchitecture, type Descriptor } from '../oci-types.js';

/** Choosing one image manifest from an OCI index or Docker manifest list, by platform. */

export interface PlatformDescriptor extends Descriptor {
  platform?: { os?: string; architecture?: string; variant?: string };
}

export interface ImageIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: PlatformDescriptor[];
}

/** Linux on the host's architecture. */
export function defaultPlatform(): Platform {
  return { os: 'linux', architecture: hostArchitecture() };
}

export function formatPlatform(p: { os?: string; architecture?: string; variant?: string }): string {
  return [p.os ?? 'unknown', p.architecture ?? 'unknown', p.variant].filter(Boolean).join('/');
}

export function checkIndex(value: unknown, digest: string): ImageIndex {
  const index = value as ImageIndex;
  if (typeof index !== 'object' || index === null || index.schemaVersion !== 2) throw bad(`index ${digest}: schemaVersion must be 2`);
  if (!Array.isArray(index.manifests)) throw bad(`index ${digest}: has no manifests list`);
  index.manifests.forEach((m, i) => checkDescriptor(m, `index ${digest} entry ${i}`));
  return index;
}

// arm64 images are v8 whether or not the index says so (as containerd's platform matcher assumes).
function variantOf(architecture: string | undefined, variant: string | undefined): string {
  return architecture === 'arm64' && (variant === undefined || variant === '') ? 'v8' : (variant ?? '');
}

/** Attestations and other non-runnable entries (BuildKit marks them `unknown/unknown`). */
function isRunnable(d: PlatformDescriptor): boolean {
  return d.platform !== undefined && d.platform.os !== 'unknown' && d.annotations?.['vnd.docker.reference.type'] === undefined;
}

/**
 * The entry for `want`: same os and architecture, and same variant when `want` names one. When it
 * does not, an entry without a variant or with the architecture's default is preferred, then the first.
 * NOT_FOUND lists the platforms the index offers.
 */
export function selectManifest(index: ImageIndex, want: Platform, what: string): PlatformDescriptor {
  const candidates = index.manifests.filter(isRunnable).filter((d) => d.platform!.os === want.os && d.platform!.architecture === want.architecture);
  const wantVariant = variantOf(want.architecture, want.variant);
  const matches =
    want.variant !== undefined
      ? candidates.filter((d) => variantOf(d.platform!.architecture, d.platform!.variant) === wantVariant)
      : [...candidates.filter((d) => variantOf(d.platform!.architecture, d.platform!.variant) === wantVariant), ...candidates];
  const chosen = matches[0];
  if (chosen !== undefined) return chosen;
  const available = [...new Set(index.manifests.filter(isRunnable).map((d) => formatPlatform(d.platform!)))];
  throw new PrismError(
    'NOT_FOUND',
    `${what} has no image for ${formatPlatform(want)}; available platforms: ${available.length > 0 ? available.join(', ') : 'none'}`,
  );
}
