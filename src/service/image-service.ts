import { PrismError } from '../core/errors.js';
import type { GcResult, ImageRecord, ImageStore, Platform, PullProgress } from '../images/image-store.js';
import type { Logger } from './logger.js';
import { NO_TELEMETRY, timedPull, type Telemetry } from './telemetry.js';
import type { SandboxRepo } from './sandbox-repo.js';

/** Images as users manage them: pull, inspect, remove (refused while a sandbox uses one), import, GC. */
export class ImageService {
  constructor(
    private readonly images: ImageStore,
    private readonly repo: SandboxRepo,
    private readonly log: Logger,
    private readonly telemetry: Pick<Telemetry, 'observePull'> = NO_TELEMETRY,
  ) {}

  list(): Promise<ImageRecord[]> {
    return this.images.list();
  }

  get(ref: string): Promise<ImageRecord> {
    return this.images.get(ref);
  }

  async pull(ref: string, opts: { platform?: Platform; onProgress?: (p: PullProgress) => void; signal?: AbortSignal } = {}): Promise<ImageRecord> {
    const t0 = Date.now();
    const image = await timedPull(this.telemetry, 'prism', () => this.images.pull(ref, opts));
    this.log.info({ ref, digest: image.digest, ms: Date.now() - t0 }, 'image pulled');
    return image;
  }

  async remove(ref: string): Promise<void> {
    const image = await this.images.get(ref);
    const users = (await this.repo.listSandboxes()).filter((s) => s.imageDigest === image.digest);
    if (users.length > 0) {
      throw new PrismError('FAILED_PRECONDITION', `image ${ref} is used by sandbox(es) ${users.map((u) => u.name).join(', ')}; delete them first`);
    }
    // The store re-checks under its own lock, in case a sandbox was created meanwhile.
    const inUse = new Set((await this.repo.listSandboxes()).map((s) => s.imageDigest));
    await this.images.remove(ref, (img) => inUse.has(img.digest));
  }

  importArchive(file: string, ref?: string): Promise<ImageRecord[]> {
    return this.images.importArchive(file, ref ? { ref } : {});
  }

  gc(): Promise<GcResult> {
    return this.images.gc();
  }
}
