import type { PullProgress } from '../sdk/index.js';
import { humanBytes } from './output.js';

interface LayerState {
  current: number;
  total: number;
  status: string;
}

const BAR = 24;

/**
 * Per-layer progress for `image pull`. On a terminal the lines are redrawn in place; otherwise one
 * line is written per finished step, so logs stay readable.
 */
export class PullProgressView {
  private readonly layers = new Map<string, LayerState>();
  private drawn = 0;
  private lastDraw = 0;

  constructor(private readonly out: { write(s: string): unknown; isTTY?: boolean }) {}

  update(p: PullProgress): void {
    if (p.phase === 'resolving') return this.line(`resolving ${p.ref}`);
    if (!p.layer) return;
    const prev = this.layers.get(p.layer);
    const st: LayerState = prev ?? { current: 0, total: p.total ?? 0, status: 'waiting' };
    if (p.phase === 'downloading') {
      st.current = p.current ?? st.current;
      st.total = p.total ?? st.total;
      st.status = p.cached ? 'already present' : st.current >= st.total && st.total > 0 ? 'downloaded' : 'downloading';
    } else if (p.phase === 'unpacking') {
      st.status = 'unpacking';
    }
    this.layers.set(p.layer, st);
    if (this.out.isTTY) {
      const now = Date.now();
      if (now - this.lastDraw > 100 || st.status !== prev?.status) this.redraw();
    } else if (st.status !== prev?.status && st.status !== 'downloading') {
      this.line(`${short(p.layer)}  ${st.status}  ${humanBytes(st.total)}`);
    }
  }

  finish(): void {
    for (const st of this.layers.values()) if (st.status !== 'already present') st.status = 'done';
    if (this.out.isTTY) this.redraw();
  }

  private line(s: string): void {
    this.out.write(`${s}\n`);
    this.drawn = 0;
  }

  private redraw(): void {
    this.lastDraw = Date.now();
    let text = this.drawn ? `\x1b[${this.drawn}A` : '';
    for (const [digest, st] of this.layers) {
      const frac = st.total > 0 ? Math.min(1, st.current / st.total) : 0;
      const fill = Math.round(frac * BAR);
      const bar = st.status === 'downloading' ? `[${'='.repeat(fill)}${' '.repeat(BAR - fill)}] ` : '';
      text += `\x1b[2K${short(digest)}  ${bar}${st.status}  ${humanBytes(st.current)}/${humanBytes(st.total)}\n`;
    }
    this.drawn = this.layers.size;
    this.out.write(text);
  }
}

function short(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}
