import { incompleteTail } from './output-encoding.js';

/** What a read from an {@link OutputRing} returns. Offsets are absolute byte counts of the stream. */
export interface RingRead {
  data: Buffer;
  /** Offset of `data[0]`: the asked offset, or later when those bytes were already dropped. */
  from: number;
  /** Where the next read continues (`from + data.length`). */
  next: number;
  /** Bytes between the asked offset and `from` that the ring no longer holds. */
  dropped: number;
}

/**
 * The last `capacity` bytes of one output stream of a background process. Offsets count every byte
 * the process ever wrote, so a reader that asks for an offset the ring has already dropped learns how
 * many bytes it missed rather than getting a silent gap. Writes never block: a process whose output
 * nobody reads keeps running and only its oldest output is lost.
 */
export class OutputRing {
  private chunks: Buffer[] = [];
  private held = 0;
  private written = 0;

  constructor(readonly capacity: number) {
    if (!(capacity > 0)) throw new RangeError('ring capacity must be positive');
  }

  /** Total bytes ever pushed: the offset the next byte will have. */
  get end(): number {
    return this.written;
  }

  /** Offset of the oldest byte still held. */
  get start(): number {
    return this.written - this.held;
  }

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.written += b.length;
    // A chunk bigger than the ring: only its tail can ever be read.
    const keep = b.length > this.capacity ? b.subarray(b.length - this.capacity) : b;
    this.chunks.push(Buffer.from(keep));
    this.held += keep.length;
    while (this.held > this.capacity) {
      const first = this.chunks[0]!;
      const over = this.held - this.capacity;
      if (first.length <= over) {
        this.chunks.shift();
        this.held -= first.length;
      } else {
        this.chunks[0] = first.subarray(over);
        this.held -= over;
      }
    }
  }

  /**
   * Bytes from `offset` on, at most `max`. With `wholeChars` a UTF-8 sequence cut at the end is left
   * for the next read, so that text read piece by piece stays text (the process is still writing it).
   * An offset past the end reads nothing yet: the reader gets bytes once the stream reaches it.
   */
  read(offset: number, opts: { max?: number; wholeChars?: boolean } = {}): RingRead {
    const asked = Math.max(0, offset);
    if (asked >= this.written) return { data: Buffer.alloc(0), from: asked, next: asked, dropped: 0 };
    const from = Math.max(asked, this.start);
    let want = Math.min(this.written - from, opts.max ?? Infinity);
    const parts: Buffer[] = [];
    let skip = from - this.start;
    for (const c of this.chunks) {
      if (want <= 0) break;
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      const piece = c.subarray(skip, skip + want);
      skip = 0;
      parts.push(piece);
      want -= piece.length;
    }
    let data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (opts.wholeChars) {
      const cut = incompleteTail(data);
      // Unless `max` alone cut the read inside one character (a reader taking 1 byte at a time must
      // still move on), the rest of the character arrives later (or the caller reads without wholeChars).
      const cutByMax = opts.max !== undefined && data.length === opts.max && cut === data.length;
      if (cut > 0 && !cutByMax) data = data.subarray(0, data.length - cut);
    }
    return { data, from, next: from + data.length, dropped: from - asked };
  }
}
