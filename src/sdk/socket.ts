/**
 * The WebSocket seam of the SDK. Terminals (`sandbox.pty()`) need a WebSocket; Node 20 has none built
 * in (the `ws` package serves), a browser has its own and cannot send headers on one. Both speak the
 * WHATWG interface below; each platform (./node-platform.ts, ./browser.ts) opens sockets its own way.
 */

/** The part of the WHATWG WebSocket the SDK uses; browsers' WebSocket and `ws`'s both have it. */
export interface MessageSocket {
  binaryType: string;
  readonly readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'message', listener: (ev: { data: unknown }) => void): void;
  addEventListener(type: 'close', listener: (ev: { code: number }) => void): void;
  addEventListener(type: 'open' | 'error', listener: () => void): void;
}

export const SOCKET_CONNECTING = 0;
export const SOCKET_OPEN = 1;

/**
 * A socket being opened: listeners can go on `socket` before any byte arrives; `opened` resolves once
 * the server accepted, or rejects with the API's error (a PrismApiError) when it refused.
 */
export interface SocketOpening {
  socket: MessageSocket;
  opened: Promise<void>;
}

export { PTY_PROTOCOL, BEARER_PROTOCOL_PREFIX, bearerProtocol } from '../core/socket-protocols.js';
