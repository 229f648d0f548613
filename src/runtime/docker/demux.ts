import type { Readable, Writable } from 'node:stream';

/**
 * Splits the engine's multiplexed exec stream (8-byte headers: stream type, 3 zero bytes, length
 * big-endian; then the payload) into `stdout` and `stderr`, honouring their back-pressure: when a
 * target's buffer is full the engine's stream is paused until it drains, so a slow reader slows the
 * command instead of growing the daemon's memory (docker-modem's demuxStream writes regardless).
 * Ends neither target; the caller does.
 */
export function demuxWithBackpressure(source: Readable, stdout: Writable, stderr: Writable): void {
  let pending: Buffer = Buffer.alloc(0);
  // The targets full right now: one 'drain' listener each, however many frames of one chunk found it full.
  const full = new Set<Writable>();
  const resumeWhenDrained = (target: Writable): void => {
    source.pause();
    if (full.has(target)) return;
    full.add(target);
    target.once('drain', () => {
      full.delete(target);
      if (full.size === 0) source.resume();
    });
  };
  source.on('data', (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let off = 0;
    while (pending.length - off >= 8) {
      const size = pending.readUInt32BE(off + 4);
      if (pending.length - off - 8 < size) break;
      const target = pending[off] === 2 ? stderr : stdout;
      const payload = pending.subarray(off + 8, off + 8 + size);
      off += 8 + size;
      if (payload.length > 0 && !target.write(payload)) resumeWhenDrained(target);
    }
    pending = off === pending.length ? Buffer.alloc(0) : Buffer.from(pending.subarray(off));
  });
}
