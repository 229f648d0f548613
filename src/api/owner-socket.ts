import { WebSocket, type RawData } from 'ws';

/**
 * The WebSocket half of owner forwarding (owner-proxy.ts forwards plain HTTP): a terminal on another
 * node's sandbox is opened by dialling that node's same endpoint, then the two sockets are spliced
 * frame by frame (binary stays binary, text stays text, closes travel both ways). The dial happens
 * before this node upgrades the client's request, so a refusal by the owner (404, 412, ...) reaches
 * the client as that same HTTP answer.
 */

export type OwnerDial =
  | { ok: true; socket: OwnerSocket }
  | { ok: false; status: number; contentType: string; body: Buffer };

/** How long the owner may take to accept the upgrade (it opens the terminal first). */
const HANDSHAKE_MS = 30_000;

/** A socket to the owner whose frames are held until the client's socket is there to take them. */
export class OwnerSocket {
  private held: [RawData, boolean][] = [];
  private closed: [number, Buffer] | null = null;
  private peer: WebSocket | null = null;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (this.peer) forward(this.peer, data, isBinary);
      else this.held.push([data, isBinary]);
    });
    ws.on('close', (code, reason) => {
      if (this.peer) closeWith(this.peer, code, reason);
      else this.closed = [code, reason];
    });
    ws.on('error', () => undefined); // surfaces as 'close'
  }

  /** Splices the client's socket in: what the owner sent so far is delivered first. */
  splice(client: WebSocket): void {
    this.peer = client;
    for (const [data, isBinary] of this.held.splice(0)) forward(client, data, isBinary);
    if (this.closed) closeWith(client, ...this.closed);
    client.on('message', (data, isBinary) => forward(this.ws, data, isBinary));
    client.on('close', (code, reason) => closeWith(this.ws, code, reason));
    client.on('error', () => undefined);
  }

  /** The client went away before its upgrade finished. */
  abandon(): void {
    this.ws.terminate();
  }
}

function forward(to: WebSocket, data: RawData, isBinary: boolean): void {
  if (to.readyState === WebSocket.OPEN) to.send(data, { binary: isBinary });
}

/** Passes a close on; codes that may not be sent (1005 none, 1006 abnormal, ...) become 1011 or 1000. */
function closeWith(to: WebSocket, code: number, reason: Buffer): void {
  if (to.readyState === WebSocket.CLOSED || to.readyState === WebSocket.CLOSING) return;
  const sendable = (code >= 1000 && code <= 1014 && ![1004, 1005, 1006].includes(code)) || (code >= 3000 && code <= 4999);
  if (sendable) to.close(code, reason.subarray(0, 123));
  else if (code === 1005) to.close(1000);
  else to.close(1011, 'the other side of the forwarded terminal went away');
}

/**
 * Opens `url` (the owner's API, http(s)) as a WebSocket with `headers`, verifying an https owner
 * against the cluster CA and presenting this node's certificate, as HTTP forwarding does.
 * Resolves with the socket, or with the owner's HTTP answer when it refused the upgrade; rejects
 * when the owner could not be reached.
 */
export function dialOwner(url: string, headers: Record<string, string>, tls?: { cert: Buffer; key: Buffer; ca: Buffer }): Promise<OwnerDial> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      headers,
      handshakeTimeout: HANDSHAKE_MS,
      perMessageDeflate: false,
      maxPayload: 1 << 20,
      ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {}),
    });
    const socket = new OwnerSocket(ws);
    ws.once('open', () => resolve({ ok: true, socket }));
    ws.once('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        req.destroy();
        resolve({ ok: false, status: res.statusCode ?? 502, contentType: String(res.headers['content-type'] ?? 'application/json'), body: Buffer.concat(chunks) });
      });
      res.once('error', (e) => reject(e));
    });
    ws.once('error', (e) => reject(e));
  });
}
