/**
 * The little of the DNS wire format (RFC 1035) the sandbox DNS filter needs: the question of a query,
 * the A records of a response, and a REFUSED answer. Malformed input yields undefined, never a throw.
 */

export interface DnsQuestion {
  id: number;
  /** Lowercase, no trailing dot. */
  name: string;
  type: number;
  /** Byte offset just past the question section. */
  end: number;
}

export const TYPE_A = 1;
const MAX_POINTER_HOPS = 32;

/** Reads a (possibly compressed) name at `offset`; returns it and the offset after it in place. */
function readName(buf: Buffer, offset: number): { name: string; next: number } | undefined {
  const labels: string[] = [];
  let pos = offset;
  let next = -1;
  for (let hops = 0; hops <= MAX_POINTER_HOPS; ) {
    if (pos >= buf.length) return undefined;
    const len = buf[pos]!;
    if (len === 0) {
      return { name: labels.join('.').toLowerCase(), next: next < 0 ? pos + 1 : next };
    }
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= buf.length) return undefined;
      if (next < 0) next = pos + 2;
      pos = ((len & 0x3f) << 8) | buf[pos + 1]!;
      hops++;
      continue;
    }
    if (len > 63 || pos + 1 + len > buf.length) return undefined;
    labels.push(buf.toString('latin1', pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
  return undefined;
}

/** The single question of a standard query, or undefined for anything else. */
export function parseQuery(buf: Buffer): DnsQuestion | undefined {
  if (buf.length < 12) return undefined;
  const flags = buf.readUInt16BE(2);
  if (flags & 0x8000 || ((flags >> 11) & 0xf) !== 0) return undefined; // a response, or not QUERY
  if (buf.readUInt16BE(4) !== 1) return undefined;
  const n = readName(buf, 12);
  if (!n || n.next + 4 > buf.length) return undefined;
  return { id: buf.readUInt16BE(0), name: n.name, type: buf.readUInt16BE(n.next), end: n.next + 4 };
}

/** IPv4 addresses of the A records in a response's answer section, with the smallest TTL among them. */
export function parseAnswers(buf: Buffer): { ips: number[]; ttl: number } | undefined {
  if (buf.length < 12) return undefined;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  let pos = 12;
  for (let i = 0; i < qd; i++) {
    const n = readName(buf, pos);
    if (!n) return undefined;
    pos = n.next + 4;
  }
  const ips: number[] = [];
  let ttl = Infinity;
  for (let i = 0; i < an; i++) {
    const n = readName(buf, pos);
    if (!n || n.next + 10 > buf.length) return undefined;
    const type = buf.readUInt16BE(n.next);
    const rrTtl = buf.readUInt32BE(n.next + 4);
    const len = buf.readUInt16BE(n.next + 8);
    const data = n.next + 10;
    if (data + len > buf.length) return undefined;
    if (type === TYPE_A && len === 4) {
      ips.push(buf.readUInt32BE(data));
      ttl = Math.min(ttl, rrTtl);
    }
    pos = data + len;
  }
  return { ips, ttl: Number.isFinite(ttl) ? ttl : 0 };
}

/** A response to `query` with the given rcode (5 = REFUSED) and no answers. */
export function errorResponse(query: Buffer, q: DnsQuestion, rcode: number): Buffer {
  const out = Buffer.from(query.subarray(0, q.end));
  const rd = query.readUInt16BE(2) & 0x0100;
  out.writeUInt16BE(0x8000 | rd | 0x0080 | rcode, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt32BE(0, 6);
  out.writeUInt16BE(0, 10);
  return out;
}

/** A query for `name` (tests and the setup-time resolution). */
export function buildQuery(id: number, name: string, type = TYPE_A): Buffer {
  const labels = name.split('.').filter(Boolean).map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')]));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2);
  header.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(type, 1);
  tail.writeUInt16BE(1, 3);
  return Buffer.concat([header, ...labels, tail]);
}

/** An answer to `query` with A records (tests' tiny DNS server uses it too). */
export function answerA(query: Buffer, q: DnsQuestion, ips: readonly number[], ttl: number): Buffer {
  const head = Buffer.from(query.subarray(0, q.end));
  head.writeUInt16BE(0x8180 | (query.readUInt16BE(2) & 0x0100), 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(ips.length, 6);
  head.writeUInt32BE(0, 8);
  const rrs = ips.map((ip) => {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); // the question's name
    rr.writeUInt16BE(TYPE_A, 2);
    rr.writeUInt16BE(1, 4);
    rr.writeUInt32BE(ttl, 6);
    rr.writeUInt16BE(4, 10);
    rr.writeUInt32BE(ip >>> 0, 12);
    return rr;
  });
  return Buffer.concat([head, ...rrs]);
}
