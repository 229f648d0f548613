import { describe, expect, it } from 'vitest';
import { checkIndex, formatPlatform, selectManifest, type ImageIndex } from './manifest-select.js';

const d = (n: number): string => `sha256:${String(n).repeat(64).slice(0, 64)}`;
const entry = (n: number, os: string, architecture: string, variant?: string, annotations?: Record<string, string>) => ({
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: d(n),
  size: 100,
  platform: { os, architecture, ...(variant ? { variant } : {}) },
  ...(annotations ? { annotations } : {}),
});

const index: ImageIndex = {
  schemaVersion: 2,
  manifests: [
    entry(1, 'linux', 'amd64'),
    entry(2, 'linux', 'arm', 'v6'),
    entry(3, 'linux', 'arm', 'v7'),
    entry(4, 'linux', 'arm64', 'v8'),
    entry(5, 'unknown', 'unknown', undefined, { 'vnd.docker.reference.type': 'attestation-manifest' }),
  ],
};

describe('platform selection', () => {
  it('matches os and architecture, and the variant when asked', () => {
    expect(selectManifest(index, { os: 'linux', architecture: 'amd64' }, 'x').digest).toBe(d(1));
    expect(selectManifest(index, { os: 'linux', architecture: 'arm', variant: 'v7' }, 'x').digest).toBe(d(3));
    expect(selectManifest(index, { os: 'linux', architecture: 'arm' }, 'x').digest).toBe(d(2));
  });

  it('treats arm64 with and without v8 as the same', () => {
    expect(selectManifest(index, { os: 'linux', architecture: 'arm64' }, 'x').digest).toBe(d(4));
    const bare: ImageIndex = { schemaVersion: 2, manifests: [entry(6, 'linux', 'arm64')] };
    expect(selectManifest(bare, { os: 'linux', architecture: 'arm64', variant: 'v8' }, 'x').digest).toBe(d(6));
  });

  it('lists the runnable platforms when none match', () => {
    expect(() => selectManifest(index, { os: 'linux', architecture: 's390x' }, 'img:1')).toThrow(
      expect.objectContaining({
        code: 'NOT_FOUND',
        message: 'img:1 has no image for linux/s390x; available platforms: linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8',
      }),
    );
  });

  it('checks the index shape', () => {
    expect(() => checkIndex({ schemaVersion: 2 }, 'i')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => checkIndex({ schemaVersion: 2, manifests: [{ digest: 'nope', size: 1 }] }, 'i')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(formatPlatform({ os: 'linux', architecture: 'arm', variant: 'v7' })).toBe('linux/arm/v7');
  });
});
