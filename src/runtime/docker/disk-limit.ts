import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import { engineError, engineStatus } from './engine-errors.js';
import { MANAGED_LABEL } from './layer-image.js';
import { TASK_INIT_PATH } from '../driver.js';

/**
 * Whether the engine can limit a container's size (HostConfig.StorageOpt.size), which is how the
 * docker driver enforces a task's diskMb. Depends on the engine's storage driver:
 * - overlay2 only on a data root of XFS mounted with pquota: an XFS project quota on the container's
 *   writable layer (ENOSPC past it). On ext4 and elsewhere the engine refuses the option.
 * - btrfs (a qgroup on the container's subvolume, EDQUOT past it), zfs, devicemapper and vfs limit the
 *   container's whole root filesystem, image included: `wholeRootfs`, so the driver adds the image's size.
 */
export type DiskLimitSupport =
  | { enforced: true; storageDriver: string; wholeRootfs: boolean; detail: string }
  | { enforced: false; detail: string };

/** Large enough for any probe image (prism-init alone) on a whole-rootfs driver. */
const TRIAL_SIZE = '64M';

/**
 * Asks the engine once: its storage driver and backing filesystem from /info, then, unless that
 * already says no (overlay2 on anything but XFS), a trial create of a container with a size on
 * `probeImage` (removed at once): only that shows whether XFS was mounted with pquota, or whether a
 * btrfs driver may enable quotas. Rejects (PrismError) only when the engine cannot be asked at all.
 */
export async function probeDiskLimit(docker: Docker, probeImage: () => Promise<string>): Promise<DiskLimitSupport> {
  let info: { Driver?: string; DriverStatus?: [string, string][] };
  try {
    info = (await docker.info()) as typeof info;
  } catch (e) {
    throw engineError(e, 'asking the Docker engine for its storage driver');
  }
  const driver = info.Driver ?? 'unknown';
  const backing = info.DriverStatus?.find(([k]) => k === 'Backing Filesystem')?.[1];
  const on = backing ? `${driver} on ${backing}` : driver;
  if (driver === 'overlay2' && backing !== 'xfs') {
    return { enforced: false, detail: `unsupported: ${on} (needs xfs with pquota)` };
  }
  const image = await probeImage();
  const name = `prism-disk-probe-${randomBytes(6).toString('hex')}`;
  try {
    await docker.createContainer({
      name, Image: image, Cmd: [TASK_INIT_PATH], NetworkDisabled: true, Labels: { [MANAGED_LABEL]: 'true' },
      HostConfig: { NetworkMode: 'none', StorageOpt: { size: TRIAL_SIZE } },
    });
  } catch (e) {
    if (engineStatus(e) === undefined) throw engineError(e, 'trying a container size limit');
    // The engine's own words are the reason (e.g. "--storage-opt is supported only for overlay over xfs with 'pquota' mount option").
    const why = (e as { json?: { message?: string } }).json?.message ?? String(e);
    return { enforced: false, detail: `unsupported: ${on} (${why})` };
  }
  await docker.getContainer(name).remove({ force: true, v: true }).catch((e: unknown) => {
    throw engineError(e, `removing the probe container ${name}`);
  });
  const wholeRootfs = driver !== 'overlay2';
  return {
    enforced: true, storageDriver: driver, wholeRootfs,
    detail: wholeRootfs ? `enforced: ${on} (limit covers the image; its size is added)` : `enforced: ${on} (project quota on the writable layer)`,
  };
}

/**
 * The StorageOpt size for a task: diskMb of writes, plus the image where the limit covers it. The
 * image's size is its files' bytes, rounded down: on disk it takes a little more (btrfs counts its
 * metadata too, ~7% for the Debian base image), so writes stop a little short of diskMb, never past it.
 */
export function storageSize(diskMb: number, imageBytes: number | undefined): string {
  return `${diskMb + Math.floor((imageBytes ?? 0) / (1 << 20))}M`;
}
