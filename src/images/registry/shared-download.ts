/**
 * One download shared by every caller that wants the same blob. Each caller may abort on its own;
 * the download itself is aborted only when every caller has left, and that last caller's abort is
 * answered once the download has stopped. Progress (bytes received so far)
 * goes to all callers; a late joiner first hears the current count.
 */
export class SharedDownload<T> {
  readonly promise: Promise<T>;
  private readonly controller = new AbortController();
  private readonly listeners = new Set<{ onBytes: (n: number) => void }>();
  private waiters = 0;
  private received = 0;

  constructor(run: (signal: AbortSignal, report: (received: number) => void) => Promise<T>) {
    this.promise = run(this.controller.signal, (n) => {
      this.received = n;
      for (const l of this.listeners) l.onBytes(n);
    });
    // Callers observe the outcome through join(); this only keeps an abandoned failure from being unhandled.
    this.promise.catch(() => undefined);
  }

  /** True once every caller left and the download was told to stop; a new caller must start afresh. */
  get abandoned(): boolean {
    return this.controller.signal.aborted;
  }

  join(onBytes?: (received: number) => void, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    this.waiters++;
    const listener = onBytes ? { onBytes } : undefined;
    if (listener) {
      this.listeners.add(listener);
      if (this.received > 0) listener.onBytes(this.received);
    }
    return new Promise<T>((resolve, reject) => {
      let left = false;
      const leave = (): void => {
        if (left) return;
        left = true;
        this.waiters--;
        if (listener) this.listeners.delete(listener);
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        leave();
        if (this.waiters > 0) return reject(signal!.reason);
        // The last caller left: the download stops, and the abort is answered once it has cleaned up
        // (a half-written temporary file), so that nothing of it is left when the caller hears.
        this.controller.abort(signal!.reason);
        this.promise.then(
          () => reject(signal!.reason),
          () => reject(signal!.reason),
        );
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.promise.then(
        (v) => (leave(), resolve(v)),
        (e) => (leave(), reject(e)),
      );
    });
  }
}
