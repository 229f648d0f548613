import { randomBytes } from 'node:crypto';

/** The names of warm-pool tasks (`pool-` and 12 hex digits): made before they belong to a sandbox. */
export const POOL_SLOT = /^pool-[0-9a-f]{12}$/;

export interface WarmPoolOptions {
  /** Ready tasks kept per shape. */
  size: number;
  /** Shapes kept at a time: the oldest shape's pool goes when another one starts. */
  maxShapes: number;
  /** Removes a pool task (ready, or made after the pool closed). */
  remove(slot: string): Promise<void>;
  onError(e: unknown, key: string): void;
}

/**
 * The bookkeeping of a driver's warm pools: ready tasks by shape key (the driver decides what a shape
 * is and how a task is made and claimed), each topped up to `size` in the background, one at a time.
 * The tasks themselves are the driver's; this class names them, counts them and removes them on close.
 */
export class WarmPools {
  private readonly ready = new Map<string, string[]>();
  private readonly making = new Set<string>();
  private readonly filling = new Map<string, Promise<void>>();
  private closed = false;

  constructor(private readonly opts: WarmPoolOptions) {}

  /** A ready task of shape `key`, now the caller's; undefined when none is ready. */
  take(key: string): string | undefined {
    return this.ready.get(key)?.shift();
  }

  /** A task taken but not used (its claim could not start): ready again, first in line. */
  giveBack(key: string, slot: string): void {
    this.ready.get(key)?.unshift(slot);
  }

  /** Tops up the pool of `key` to `size` ready tasks in the background; `make` makes one task named `slot`. */
  refill(key: string, make: (slot: string) => Promise<void>): void {
    if (this.closed || this.filling.has(key)) return;
    const run = (async () => {
      if (!this.ready.has(key)) {
        if (this.ready.size >= this.opts.maxShapes) {
          const [oldest, slots] = this.ready.entries().next().value as [string, string[]];
          this.ready.delete(oldest);
          for (const s of slots) await this.opts.remove(s).catch((e: unknown) => this.opts.onError(e, oldest));
        }
        this.ready.set(key, []);
      }
      while (!this.closed && (this.ready.get(key)?.length ?? 0) < this.opts.size) {
        const slot = `pool-${randomBytes(6).toString('hex')}`;
        this.making.add(slot);
        try {
          await make(slot);
          if (this.closed || !this.ready.has(key)) {
            await this.opts.remove(slot);
            return;
          }
          this.ready.get(key)!.push(slot);
        } finally {
          this.making.delete(slot);
        }
      }
    })()
      .catch((e: unknown) => this.opts.onError(e, key))
      .finally(() => this.filling.delete(key));
    this.filling.set(key, run);
  }

  /** Tasks the pools hold, ready or being made: no sandbox's, and not orphans either. */
  held(): Set<string> {
    return new Set([...[...this.ready.values()].flat(), ...this.making]);
  }

  /** Resolves when no refill is running (tests, benches). */
  async settled(): Promise<void> {
    while (this.filling.size > 0) await Promise.all(this.filling.values());
  }

  /** Stops refilling and removes every ready task (a crash leaves them to the driver's orphan cleanup). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.filling.values());
    const ready = [...this.ready.values()].flat();
    this.ready.clear();
    for (const slot of ready) await this.opts.remove(slot).catch((e: unknown) => this.opts.onError(e, slot));
  }
}
