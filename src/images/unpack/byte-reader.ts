import { bad } from '../oci-types.js';

/** Pulls exact byte counts out of an async iterator of chunks. */
export class ByteReader {
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;

  /** `fail` makes the error for input that ends inside a read, or a field longer than asked for. */
  constructor(
    private readonly source: AsyncIterator<Buffer>,
    private readonly fail: (what: 'truncated' | 'oversized') => Error = (what) => bad(what === 'truncated' ? 'tar stream is truncated' : 'tar field is too long'),
  ) {}

  private async pull(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.source.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    this.pending = this.pending.length ? Buffer.concat([this.pending, r.value]) : r.value;
    return true;
  }

  /** Exactly n bytes, or null at a clean end of input (nothing left). */
  async read(n: number): Promise<Buffer | null> {
    while (this.pending.length < n) {
      if (!(await this.pull())) {
        if (this.pending.length === 0) return null;
        throw this.fail('truncated');
      }
    }
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return out;
  }

  /** Up to n bytes as they arrive; throws if the input ends first. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    while (n > 0) {
      if (this.pending.length === 0 && !(await this.pull())) throw this.fail('truncated');
      const take = this.pending.subarray(0, n);
      this.pending = this.pending.subarray(take.length);
      n -= take.length;
      yield take;
    }
  }

  /** The bytes before the next `byte` (which is consumed), or null at a clean end; at most `max` bytes. */
  async until(byte: number, max: number): Promise<Buffer | null> {
    for (;;) {
      const at = this.pending.indexOf(byte);
      if (at >= 0 && at <= max) {
        const out = this.pending.subarray(0, at);
        this.pending = this.pending.subarray(at + 1);
        return out;
      }
      if (at > max || this.pending.length > max) throw this.fail('oversized');
      if (!(await this.pull())) {
        if (this.pending.length === 0) return null;
        throw this.fail('truncated');
      }
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.chunks(n)) void _;
  }

  /** Consumes the rest of the input (so a digest over it is complete). */
  async drain(): Promise<void> {
    this.pending = Buffer.alloc(0);
    while (await this.pull()) this.pending = Buffer.alloc(0);
  }
}
