/**
 * Command output is bytes; JSON carries strings. Valid UTF-8 travels as text, anything else as base64
 * of the exact bytes, flagged with `encoding: "base64"` (docs/api.md, "Output encoding").
 */
export type OutputEncoding = 'utf8' | 'base64';

const decoder = new TextDecoder('utf-8', { fatal: true });

export function isUtf8(b: Uint8Array): boolean {
  try {
    decoder.decode(b);
    return true;
  } catch {
    return false;
  }
}

export function encodeOutput(stdout: Buffer, stderr: Buffer): { stdout: string; stderr: string; encoding: OutputEncoding } {
  if (isUtf8(stdout) && isUtf8(stderr)) {
    return { stdout: stdout.toString('utf8'), stderr: stderr.toString('utf8'), encoding: 'utf8' };
  }
  return { stdout: stdout.toString('base64'), stderr: stderr.toString('base64'), encoding: 'base64' };
}

/**
 * Splits a stream of chunks into JSON-safe pieces: holds back a trailing incomplete UTF-8 sequence so
 * that text split across chunks stays text; a chunk that is not UTF-8 becomes base64.
 */
export class StreamEncoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): { data: string; encoding: OutputEncoding } | undefined {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const cut = incompleteTail(buf);
    this.pending = cut ? Buffer.from(buf.subarray(buf.length - cut)) : Buffer.alloc(0);
    buf = cut ? buf.subarray(0, buf.length - cut) : buf;
    return buf.length ? encodeChunk(buf) : undefined;
  }

  flush(): { data: string; encoding: OutputEncoding } | undefined {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest.length ? encodeChunk(rest) : undefined;
  }
}

/** One piece of a stream: text when it is valid UTF-8 on its own, else base64. */
export function encodeChunk(b: Buffer): { data: string; encoding: OutputEncoding } {
  return isUtf8(b) ? { data: b.toString('utf8'), encoding: 'utf8' } : { data: b.toString('base64'), encoding: 'base64' };
}

/** Length of a UTF-8 sequence started but not finished at the end of `b` (0-3). */
export function incompleteTail(b: Buffer): number {
  for (let i = 1; i <= Math.min(3, b.length); i++) {
    const c = b[b.length - i]!;
    if ((c & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead byte
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return need > i ? i : 0;
  }
  return 0;
}
