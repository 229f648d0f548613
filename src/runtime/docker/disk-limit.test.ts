import type Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { PrismError } from '../../core/errors.js';
import { probeDiskLimit, storageSize } from './disk-limit.js';

/** Just the Engine API calls probeDiskLimit makes, answering as an engine with this storage driver would. */
function engine(info: object, create: (opts: Docker.ContainerCreateOptions) => Promise<unknown>) {
  const calls = { created: [] as Docker.ContainerCreateOptions[], removed: [] as string[] };
  const docker = {
    info: async () => info,
    createContainer: async (opts: Docker.ContainerCreateOptions) => {
      calls.created.push(opts);
      return create(opts);
    },
    getContainer: (name: string) => ({ remove: async () => void calls.removed.push(name) }),
  } as unknown as Docker;
  return { docker, calls };
}

const image = async () => 'prism.local/layers:probe';

describe('probeDiskLimit', () => {
  it('says overlay2 on ext4 cannot, without trying a container', async () => {
    const { docker, calls } = engine({ Driver: 'overlay2', DriverStatus: [['Backing Filesystem', 'extfs']] }, async () => ({}));
    expect(await probeDiskLimit(docker, image)).toEqual({ enforced: false, detail: 'unsupported: overlay2 on extfs (needs xfs with pquota)' });
    expect(calls.created).toEqual([]);
  });

  it('tries overlay2 on XFS, and reports the engine\'s refusal when XFS lacks pquota', async () => {
    const refusal = Object.assign(new Error('(HTTP code 500) server error'), {
      statusCode: 500, json: { message: "--storage-opt is supported only for overlay over xfs with 'pquota' mount option" },
    });
    const { docker, calls } = engine({ Driver: 'overlay2', DriverStatus: [['Backing Filesystem', 'xfs']] }, async () => Promise.reject(refusal));
    const r = await probeDiskLimit(docker, image);
    expect(r).toEqual({ enforced: false, detail: "unsupported: overlay2 on xfs (--storage-opt is supported only for overlay over xfs with 'pquota' mount option)" });
    expect(calls.created[0]?.HostConfig?.StorageOpt).toEqual({ size: '64M' });
    expect(calls.removed).toEqual([]);
  });

  it('enforces on overlay2 over XFS with pquota (writable layer only) and removes the trial container', async () => {
    const { docker, calls } = engine({ Driver: 'overlay2', DriverStatus: [['Backing Filesystem', 'xfs']] }, async () => ({}));
    expect(await probeDiskLimit(docker, image)).toMatchObject({ enforced: true, storageDriver: 'overlay2', wholeRootfs: false });
    expect(calls.removed).toEqual([calls.created[0]!.name]);
  });

  it('enforces on btrfs, where the limit covers the image too', async () => {
    const { docker } = engine({ Driver: 'btrfs', DriverStatus: [['Build Version', 'Btrfs v6.2']] }, async () => ({}));
    expect(await probeDiskLimit(docker, image)).toMatchObject({ enforced: true, storageDriver: 'btrfs', wholeRootfs: true });
  });

  it('rejects (is not cached as unsupported) when the engine does not answer', async () => {
    const docker = { info: async () => Promise.reject(Object.assign(new Error('connect ENOENT'), { code: 'ENOENT' })) } as unknown as Docker;
    const err = await probeDiskLimit(docker, image).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrismError);
    expect((err as PrismError).code).toBe('UNAVAILABLE');
  });
});

describe('storageSize', () => {
  it('is diskMb alone on overlay2, and adds the image\'s whole MiB where the limit covers it', () => {
    expect(storageSize(256, undefined)).toBe('256M');
    // Rounded down: the image takes more on disk than its bytes, so writes never get past diskMb.
    expect(storageSize(256, 161_163_206)).toBe('409M');
  });
});
