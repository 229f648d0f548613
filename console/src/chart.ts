/** Geometry of the metrics charts: samples to an SVG polyline, pure so it can be tested. */

export interface Point {
  t: number;
  v: number;
}

export interface Plot {
  /** SVG path data ("M x y L x y ..."), empty when there is nothing to draw. */
  path: string;
  /** The value at the top of the chart. */
  max: number;
}

/**
 * Scales points into a width x height box: time left to right over the points' span, values bottom to
 * top from 0 to `ceiling` (or the largest value, at least 1). Values out of range are clamped.
 */
export function plot(points: Point[], width: number, height: number, ceiling?: number): Plot {
  const max = ceiling ?? Math.max(1, ...points.map((p) => p.v));
  if (points.length === 0) return { path: '', max };
  const t0 = points[0]!.t;
  const span = points[points.length - 1]!.t - t0 || 1;
  const parts = points.map((p, i) => {
    const x = points.length === 1 ? width : ((p.t - t0) / span) * width;
    const y = height - (Math.min(Math.max(p.v, 0), max) / max) * height;
    return `${i === 0 ? 'M' : 'L'}${round(x)} ${round(y)}`;
  });
  return { path: parts.join(' '), max };
}

const round = (n: number): number => Math.round(n * 10) / 10;
