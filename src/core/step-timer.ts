/**
 * Where an operation's time goes: each `step(name)` records the milliseconds since the previous one
 * (or since construction), for the operation's log line (bench/oci-latency.ts reads the oci create's).
 */
export class StepTimer {
  readonly steps: Record<string, number> = {};
  private mark = performance.now();
  private readonly start = this.mark;

  step(name: string): void {
    const now = performance.now();
    this.steps[name] = Math.round((now - this.mark) * 10) / 10;
    this.mark = now;
  }

  /** Milliseconds since construction. */
  totalMs(): number {
    return Math.round((performance.now() - this.start) * 10) / 10;
  }
}
