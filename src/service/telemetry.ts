/** Where services report how long their work took (the node's Prometheus metrics: src/service/prometheus.ts). */
export interface Telemetry {
  /** A create answered: running (`ok`) or failed, `seconds` after the request. */
  observeCreate(runtime: string, seconds: number, ok: boolean): void;
  /** A command ended, `seconds` after it started. */
  observeExec(runtime: string, seconds: number): void;
  /**
   * An image pull ended, `seconds` after it started: by Prism's image store (`prism`, for
   * `POST /images` and for creates of an image it lacks) or by a runtime that keeps its own images
   * (its name: `docker`).
   */
  observePull(store: string, seconds: number, ok: boolean): void;
}

/** Reports nowhere (tests, and tools that wire services without metrics). */
export const NO_TELEMETRY: Telemetry = { observeCreate() {}, observeExec() {}, observePull() {} };

/** Runs `pull`, reporting its duration and whether it succeeded to `telemetry`. */
export async function timedPull<T>(telemetry: Pick<Telemetry, 'observePull'>, store: string, pull: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    const v = await pull();
    telemetry.observePull(store, (performance.now() - t0) / 1000, true);
    return v;
  } catch (e) {
    telemetry.observePull(store, (performance.now() - t0) / 1000, false);
    throw e;
  }
}
