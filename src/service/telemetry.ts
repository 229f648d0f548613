/** Where services report how long their work took (the node's Prometheus metrics: src/service/prometheus.ts). */
export interface Telemetry {
  /** A create answered: running (`ok`) or failed, `seconds` after the request. */
  observeCreate(runtime: string, seconds: number, ok: boolean): void;
  /** A command ended, `seconds` after it started. */
  observeExec(runtime: string, seconds: number): void;
}

/** Reports nowhere (tests, and tools that wire services without metrics). */
export const NO_TELEMETRY: Telemetry = { observeCreate() {}, observeExec() {} };
