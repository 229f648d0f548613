import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PrismError, asPrismError } from '../../core/errors.js';
import { NAME_PATTERN } from '../../core/ids.js';
import { VOLUME_MB_MAX, VOLUME_MB_MIN } from '../../core/types.js';
import { makeSparseExt4 } from '../../images/rootfs/ext4-disk.js';
import type { VolumeStore } from '../volume-store.js';

const NAME_RE = new RegExp(NAME_PATTERN);
const IMAGE_FILE = 'volume.ext4';
const TMP_PREFIX = '.tmp-';

/**
 * Volumes as sparse ext4 images, `<root>/<name>/volume.ext4`. A create builds in a hidden directory
 * beside it and renames that into place, so a volume exists whole or not at all. With a journal: the
 * data outlives sandboxes, so it must survive a task killed mid-write (a VM's QEMU, a host crash).
 */
export class LocalVolumeStore implements VolumeStore {
  constructor(private readonly root: string) {}

  async create(name: string, sizeMb: number): Promise<void> {
    checkName(name);
    if (!Number.isInteger(sizeMb) || sizeMb < VOLUME_MB_MIN || sizeMb > VOLUME_MB_MAX) {
      throw new PrismError('INVALID_ARGUMENT', `sizeMb must be a whole number from ${VOLUME_MB_MIN} to ${VOLUME_MB_MAX}, got ${sizeMb}`);
    }
    const dir = join(this.root, name);
    if (existsSync(dir)) throw new PrismError('ALREADY_EXISTS', `volume '${name}' already exists on this node`);
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    const tmp = join(this.root, `${TMP_PREFIX}${name}-${randomBytes(4).toString('hex')}`);
    try {
      await mkdir(tmp, { mode: 0o700 });
      await makeSparseExt4(join(tmp, IMAGE_FILE), sizeMb, { label: 'prism-vol', journal: true, rootMode: 0o1777 });
      // rename(2) onto an existing volume fails with ENOTEMPTY (it holds its image): a racing create lost.
      await rename(tmp, dir).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOTEMPTY' || e.code === 'EEXIST') throw new PrismError('ALREADY_EXISTS', `volume '${name}' already exists on this node`);
        throw e;
      });
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw asPrismError(e, 'INTERNAL', `creating volume '${name}'`);
    }
  }

  async image(name: string): Promise<string> {
    checkName(name);
    const file = join(this.root, name, IMAGE_FILE);
    if (!existsSync(file)) throw new PrismError('NOT_FOUND', `volume '${name}' has no data on this node`);
    return file;
  }

  async remove(name: string): Promise<void> {
    checkName(name);
    await rm(join(this.root, name), { recursive: true, force: true });
  }

  async list(): Promise<string[]> {
    const entries = await readdir(this.root, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
  }

  /** e2fsck -fy: forced full check, repairs without asking. Exit 0-3 left a sound file system. */
  async check(name: string): Promise<void> {
    const image = await this.image(name);
    const { code, output } = await new Promise<{ code: number; output: string }>((resolve) => {
      execFile('e2fsck', ['-f', '-y', image], { timeout: 30 * 60_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
        const c = err ? (typeof err.code === 'number' ? err.code : 8) : 0;
        resolve({ code: c, output: `${stdout}${stderr}`.trim() });
      });
    });
    if (code >= 4) {
      const tail = output.split('\n').slice(-3).join(' | ');
      throw new PrismError('FAILED_PRECONDITION', `the file system of volume '${name}' is damaged beyond repair (e2fsck exit ${code}: ${tail})`);
    }
  }

  async sweep(): Promise<void> {
    for (const e of await readdir(this.root).catch(() => [] as string[])) {
      if (e.startsWith(TMP_PREFIX)) await rm(join(this.root, e), { recursive: true, force: true });
    }
  }
}

function checkName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new PrismError('INVALID_ARGUMENT', `volume name '${name}' is invalid: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit`);
  }
}
