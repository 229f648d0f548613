/** Summary statistics for latency samples (milliseconds). */
export interface Summary {
  runs: number;
  medianMs: number;
  p90Ms: number;
  minMs: number;
  maxMs: number;
}

export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!;
  const r = (x: number) => Math.round(x * 100) / 100;
  return { runs: s.length, medianMs: r(q(0.5)), p90Ms: r(q(0.9)), minMs: r(s[0]!), maxMs: r(s.at(-1)!) };
}

export async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Runs `fn` over 0..n-1 with `limit` in flight: each success's latency, the failures, the wall time. */
export async function inFlight(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<{ latencies: number[]; failures: string[]; wallMs: number }> {
  const latencies: number[] = [];
  const failures: string[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(limit, n) }, async () => {
    while (next < n) {
      const i = next++;
      const s = performance.now();
      try {
        await fn(i);
        latencies.push(performance.now() - s);
      } catch (e) {
        failures.push(`${i}: ${(e as Error).message}`);
      }
    }
  }));
  return { latencies, failures, wallMs: performance.now() - t0 };
}
