import { PrismApiError } from './errors.js';

/** Wire formats shared by the SDK's calls: NDJSON streams and the API's output encoding (docs/api.md). */

/**
 * Splits the body into JSON values, one per line. Lines are cut on the newline byte before decoding, so
 * a line (or a multi-byte character) split across network chunks is reassembled first.
 */
export async function* readNdjson(res: Response, signal?: AbortSignal): AsyncGenerator<unknown> {
  if (!res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let pending: Uint8Array[] = [];
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (signal?.aborted) throw e;
        throw new PrismApiError('UNAVAILABLE', `exec stream broke: ${(e as Error).message}`, { retryable: false, cause: e });
      }
      if (chunk.done) break;
      let bytes = chunk.value;
      for (let nl = bytes.indexOf(0x0a); nl !== -1; nl = bytes.indexOf(0x0a)) {
        pending.push(bytes.subarray(0, nl));
        const line = parseLine(decoder.decode(concat(pending)));
        pending = [];
        if (line !== undefined) yield line;
        bytes = bytes.subarray(nl + 1);
      }
      if (bytes.length > 0) pending.push(bytes);
    }
    const last = parseLine(decoder.decode(concat(pending)));
    if (last !== undefined) yield last;
  } finally {
    reader.releaseLock();
  }
}

function parseLine(line: string): unknown {
  if (line.trim() === '') return undefined;
  try {
    return JSON.parse(line);
  } catch (e) {
    throw new PrismApiError('INTERNAL', `invalid NDJSON line from the API: ${line.slice(0, 200)}`, { cause: e });
  }
}

/** Output bytes per docs/api.md "Output encoding": base64 of the exact bytes, else the UTF-8 text. */
export function decodeOutput(data: string, encoding: string | undefined): Uint8Array {
  if (encoding !== 'base64') return new TextEncoder().encode(data);
  const bin = atob(data);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let bin = '';
  // Chunked: String.fromCharCode(...bytes) overflows the call stack on large inputs.
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
