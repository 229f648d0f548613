/** Collects at most `cap` bytes of a stream; `truncated` says whether more came. */
export class CappedBuffer {
  private parts: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(private readonly cap: number) {}
  push(b: Buffer): void {
    const room = this.cap - this.size;
    if (room <= 0) {
      this.truncated ||= b.length > 0;
      return;
    }
    const take = b.length > room ? b.subarray(0, room) : b;
    if (take.length < b.length) this.truncated = true;
    this.parts.push(Buffer.from(take));
    this.size += take.length;
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}
