import type { SandboxHandle, SandboxMetric } from '../../../src/sdk/browser.js';
import { plot, type Point } from '../chart.js';
import { bytes, percent } from '../format.js';
import { useLoad } from '../hooks.js';
import { ErrorLine } from './error-line.js';

const W = 480;
const H = 120;

/** The sandbox's usage samples (GET /sandboxes/:id/metrics), redrawn every 5 s. */
export function MetricsPane({ sb }: { sb: SandboxHandle }) {
  const m = useLoad(() => sb.metrics(), [sb.id], 5000);
  const samples = m.data ?? [];
  const last = samples[samples.length - 1];
  const series = (f: (s: SandboxMetric) => number): Point[] => samples.map((s) => ({ t: Date.parse(s.timestamp), v: f(s) }));
  return (
    <div>
      <ErrorLine message={m.error} />
      {m.data && samples.length === 0 && <p>No samples yet: the first comes a few seconds after the sandbox starts.</p>}
      {last && (
        <dl class="stats" aria-label="Latest sample">
          <dt>CPU</dt>
          <dd data-metric="cpu">
            {percent(last.cpuUsedPct)} of {last.cpuCount}
          </dd>
          <dt>Memory</dt>
          <dd data-metric="memory">
            {bytes(last.memUsed)} of {bytes(last.memTotal)}
          </dd>
          <dt>Disk</dt>
          <dd data-metric="disk">
            {bytes(last.diskUsed)}
            {last.diskTotal ? ` of ${bytes(last.diskTotal)}` : ''}
          </dd>
          <dt>Processes</dt>
          <dd data-metric="pids">{last.pids}</dd>
        </dl>
      )}
      {samples.length > 0 && (
        <div class="charts">
          <Chart title="CPU used (% of the limit)" points={series((s) => s.cpuUsedPct)} ceiling={100} format={percent} />
          <Chart title="Memory used" points={series((s) => s.memUsed)} ceiling={last?.memTotal} format={bytes} />
        </div>
      )}
    </div>
  );
}

function Chart({ title, points, ceiling, format }: { title: string; points: Point[]; ceiling?: number; format: (n: number) => string }) {
  const p = plot(points, W, H, ceiling);
  return (
    <figure class="chart">
      <figcaption>
        {title} <span class="sub">(top: {format(p.max)})</span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}, ${points.length} samples`}>
        <rect x="0" y="0" width={W} height={H} class="frame" />
        <path d={p.path} class="line" />
      </svg>
    </figure>
  );
}
