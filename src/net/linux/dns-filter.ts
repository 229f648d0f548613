import { createSocket, type Socket } from 'node:dgram';
import { errorResponse, parseAnswers, parseQuery } from './dns-message.js';

export interface DnsFilterOptions {
  /** The sandbox's gateway address: the filter listens on its port 53. */
  listen: string;
  upstream: { host: string; port: number };
  /** Whether a name may be resolved; others get REFUSED. */
  allows(name: string): boolean;
  /** Called with the A records of an allowed answer before the sandbox sees it. */
  onResolved?(ips: number[], ttlSec: number): Promise<void>;
  onError?(err: unknown): void;
}

const UPSTREAM_TIMEOUT_MS = 3000;
/** Queries of one sandbox in flight upstream at once; more are dropped (clients retry), so a flood costs little. */
const MAX_IN_FLIGHT = 64;
const RCODE_SERVFAIL = 2;
const RCODE_REFUSED = 5;

/**
 * A sandbox's name server (UDP only): answers allowed names by asking the upstream resolver from the
 * host, and has their addresses opened in the sandbox's allow set *before* the answer goes back, so
 * a connection right after the lookup works; other names are REFUSED. Raw-IP connections gain
 * nothing from it: only addresses that an allowed name resolved to get opened.
 */
export class DnsFilter {
  private socket?: Socket;
  private readonly pending = new Set<Socket>();

  constructor(private readonly opts: DnsFilterOptions) {}

  async start(): Promise<void> {
    const s = createSocket({ type: 'udp4' });
    s.on('message', (msg, rinfo) => void this.answer(msg, rinfo.address, rinfo.port));
    s.on('error', (e) => this.opts.onError?.(e));
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(53, this.opts.listen, () => {
        s.off('error', reject);
        resolve();
      });
    });
    this.socket = s;
  }

  private async answer(msg: Buffer, address: string, port: number): Promise<void> {
    const q = parseQuery(msg);
    if (!q || this.pending.size >= MAX_IN_FLIGHT) return;
    let reply: Buffer;
    if (!this.opts.allows(q.name)) reply = errorResponse(msg, q, RCODE_REFUSED);
    else {
      try {
        reply = await this.forward(msg);
        const a = parseAnswers(reply);
        if (a && a.ips.length) await this.opts.onResolved?.(a.ips, a.ttl);
      } catch (e) {
        this.opts.onError?.(e);
        reply = errorResponse(msg, q, RCODE_SERVFAIL);
      }
    }
    this.socket?.send(reply, port, address);
  }

  /** One fresh socket (random source port) per query, so answers cannot be mixed up or spoofed easily. */
  private forward(msg: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = createSocket({ type: 'udp4' });
      this.pending.add(s);
      const done = (err?: Error, reply?: Buffer) => {
        clearTimeout(timer);
        this.pending.delete(s);
        s.close();
        if (err) reject(err);
        else resolve(reply!);
      };
      const timer = setTimeout(() => done(new Error('upstream DNS did not answer')), UPSTREAM_TIMEOUT_MS);
      s.on('error', (e) => done(e));
      s.on('message', (reply, rinfo) => {
        if (rinfo.address === this.opts.upstream.host && reply.length >= 2 && reply.readUInt16BE(0) === msg.readUInt16BE(0)) done(undefined, reply);
      });
      s.send(msg, this.opts.upstream.port, this.opts.upstream.host);
    });
  }

  close(): void {
    this.socket?.close();
    this.socket = undefined;
    for (const s of this.pending) s.close();
    this.pending.clear();
  }
}
