import { PrismError } from '../../core/errors.js';
import type { ImageRecord, ImageStore, Rootfs } from '../image-store.js';

/**
 * For unit tests only: an ImageStore holding exactly one image (every other reference is NOT_FOUND,
 * as if no registry had it either). It implements get, ensure and rootfs, which is all the sandbox
 * services call; the rest of the seam is out of those tests' reach.
 */
export function oneImageStore(ref: string, opts: { digest: string; layerDirs?: string[] }): ImageStore {
  const record: ImageRecord = {
    refs: [ref],
    digest: opts.digest,
    size: 1,
    createdAt: '2024-01-01T00:00:00.000Z',
    os: 'linux',
    architecture: 'amd64',
    config: { env: ['PATH=/bin'], workingDir: '/work' },
    layers: [],
  };
  const store = {
    async get(r: string): Promise<ImageRecord> {
      if (r !== ref) throw new PrismError('NOT_FOUND', `image '${r}' not found`);
      return structuredClone(record);
    },
    async ensure(r: string): Promise<ImageRecord> {
      return store.get(r);
    },
    async rootfs(r: string): Promise<Rootfs> {
      return { image: await store.get(r), layerDirs: opts.layerDirs ?? [] };
    },
  } satisfies Pick<ImageStore, 'get' | 'ensure' | 'rootfs'>;
  return store as unknown as ImageStore;
}
