/**
 * WebSocket subprotocols of the API, shared by the server (src/api/auth.ts) and the SDK
 * (src/sdk/socket.ts): one source for the wire contract.
 */

/** The subprotocol a terminal socket speaks; a server that accepts it answers with it. */
export const PTY_PROTOCOL = 'prism.pty.v1';

/**
 * A browser cannot set `Authorization` on a WebSocket, and a token must never travel in a URL (it
 * ends up in logs and history), so a browser offers it as a second subprotocol,
 * `prism.bearer.<base64url(token)>`, beside {@link PTY_PROTOCOL} (the way Kubernetes does).
 */
export const BEARER_PROTOCOL_PREFIX = 'prism.bearer.';

export function bearerProtocol(token: string): string {
  const bytes = new TextEncoder().encode(token);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return BEARER_PROTOCOL_PREFIX + btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The token in a `Sec-WebSocket-Protocol` header's bearer subprotocol, if any. */
export function tokenFromProtocols(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const p of header.split(',')) {
    const proto = p.trim();
    if (!proto.startsWith(BEARER_PROTOCOL_PREFIX)) continue;
    const b64 = proto.slice(BEARER_PROTOCOL_PREFIX.length).replace(/-/g, '+').replace(/_/g, '/');
    try {
      const bin = atob(b64);
      return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
    } catch {
      return undefined;
    }
  }
  return undefined;
}
