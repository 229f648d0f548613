/**
 * The Prism SDK in a browser (the web console is built on it): the same client as on Node, with the
 * browser's fetch and WebSocket. Same-origin use needs no CA option (the browser trusts what it
 * trusts); the token goes in the `Authorization` header, and on a WebSocket in a subprotocol
 * (./socket.ts), never in a URL.
 */
import { PrismApiError } from './errors.js';
import { PrismClient, type PrismOptions, type SdkPlatform } from './client.js';
import { PTY_PROTOCOL, bearerProtocol, type MessageSocket } from './socket.js';

type BrowserWebSocket = new (url: string, protocols: string[]) => MessageSocket;

export const browserPlatform: SdkPlatform = {
  fetchTrusting() {
    throw new PrismApiError('INVALID_ARGUMENT', 'a browser decides which certificates it trusts: the ca option is for Node only');
  },

  async openSocket(url, { token, what }) {
    const WebSocketCtor = (globalThis as unknown as { WebSocket: BrowserWebSocket }).WebSocket;
    const ws = new WebSocketCtor(url, token ? [PTY_PROTOCOL, bearerProtocol(token)] : [PTY_PROTOCOL]);
    const opened = new Promise<void>((resolve, reject) => {
      let open = false;
      ws.addEventListener('open', () => {
        open = true;
        resolve();
      });
      // A browser hides why an upgrade was refused (the HTTP answer is not exposed to scripts).
      ws.addEventListener('close', ({ code }) => {
        if (!open) reject(new PrismApiError('UNAVAILABLE', `${what}: the server refused the connection (code ${code}); the sandbox may not be running`));
      });
    });
    opened.catch(() => undefined);
    return { socket: ws, opened };
  },
};

/** Client for the Prism daemon that served the page (or `url`), in a browser. */
export class Prism extends PrismClient {
  constructor(opts: PrismOptions = {}) {
    super(opts, browserPlatform);
  }
}

export { PrismApiError } from './errors.js';
export { SandboxHandle } from './sandbox-handle.js';
export { Pty } from './pty.js';
export { decodeOutput } from './wire.js';
export type * from './index.js';
