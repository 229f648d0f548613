import { PrismApiError } from './errors.js';
import { SOCKET_CONNECTING, SOCKET_OPEN, type MessageSocket, type SocketOpening } from './socket.js';

/**
 * Interactive terminals (`sandbox.pty()`): the client side of `GET /sandboxes/:id/pty` (docs/api.md).
 * The socket comes from the platform (./socket.ts): `ws` in Node, the browser's own WebSocket.
 */

export interface PtyOptions {
  /** Terminal size; default 80x24. */
  cols?: number;
  rows?: number;
  /** argv of the command; default the sandbox user's login shell. */
  cmd?: string[];
  /** Called with the terminal's output as it arrives (stdout and stderr, as a terminal mixes them). */
  onData: (chunk: Uint8Array) => void;
}

export interface PtyExit {
  exitCode: number;
  /** Signal name when the command was killed by one, e.g. `SIGKILL`. */
  signal?: string;
}

export type PtySignal = 'SIGINT' | 'SIGQUIT' | 'SIGTERM' | 'SIGHUP' | 'SIGKILL' | 'SIGTSTP' | 'SIGCONT' | 'SIGUSR1' | 'SIGUSR2';

/** Opens WebSockets to the API: given by the client, which holds the token and the platform. */
export interface SocketDialer {
  readonly baseUrl: string;
  /** `path` is under /api/v1 and may carry a query. */
  openSocket(path: string): Promise<SocketOpening>;
}

type ControlMessage = { type: string; exitCode?: number; signal?: string | null; error?: { code: string; message: string } };

/** An open terminal. Closing it (or the process exiting) kills the command and all it started. */
export class Pty {
  readonly #ws: MessageSocket;
  readonly #exit: Promise<PtyExit>;

  /** @internal use `SandboxHandle.pty()` */
  constructor(ws: MessageSocket, onData: (chunk: Uint8Array) => void) {
    this.#ws = ws;
    ws.binaryType = 'arraybuffer';
    this.#exit = new Promise((resolve, reject) => {
      let exit: PtyExit | undefined;
      let error: PrismApiError | undefined;
      ws.addEventListener('message', ({ data }) => {
        if (data instanceof ArrayBuffer) return onData(new Uint8Array(data));
        let msg: ControlMessage;
        try {
          msg = JSON.parse(String(data)) as ControlMessage;
        } catch {
          return;
        }
        if (msg.type === 'exit') exit = { exitCode: msg.exitCode ?? 1, ...(msg.signal ? { signal: msg.signal } : {}) };
        else if (msg.type === 'error' && msg.error) error = new PrismApiError(msg.error.code, msg.error.message);
      });
      ws.addEventListener('error', () => undefined); // surfaces as 'close'
      ws.addEventListener('close', ({ code }) => {
        if (exit) resolve(exit);
        else reject(error ?? new PrismApiError('UNAVAILABLE', `the terminal connection closed (code ${code}) before the command exited; it was killed`));
      });
    });
    this.#exit.catch(() => undefined); // a caller who never waits must not see an unhandled rejection
  }

  /** Sends keystrokes (a string is sent as UTF-8); 0x03 is Ctrl-C. */
  write(data: string | Uint8Array): void {
    if (this.#ws.readyState === SOCKET_OPEN) this.#ws.send(typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }

  resize(cols: number, rows: number): void {
    this.#control({ type: 'resize', cols, rows });
  }

  /** A signal to the terminal's foreground job (default SIGKILL: the command and all it started). */
  kill(signal: PtySignal = 'SIGKILL'): void {
    this.#control({ type: 'signal', signal });
  }

  /** Resolves with the exit once the command ended; rejects when the connection broke first. */
  wait(): Promise<PtyExit> {
    return this.#exit;
  }

  /** Hangs up: the command and everything it started are killed. */
  close(): void {
    if (this.#ws.readyState === SOCKET_OPEN || this.#ws.readyState === SOCKET_CONNECTING) this.#ws.close(1000);
  }

  #control(msg: object): void {
    if (this.#ws.readyState === SOCKET_OPEN) this.#ws.send(JSON.stringify(msg));
  }
}

/** Opens `path` (under /api/v1) as a terminal; rejects with the API's error when it refuses. */
export async function openPty(dialer: SocketDialer, path: string, opts: PtyOptions): Promise<Pty> {
  const q = new URLSearchParams({ cols: String(opts.cols ?? 80), rows: String(opts.rows ?? 24) });
  if (opts.cmd) q.set('cmd', JSON.stringify(opts.cmd));
  const { socket, opened } = await dialer.openSocket(`${path}?${q.toString()}`);
  // Listeners go on before the socket opens so that the first bytes (a prompt) are never missed.
  const pty = new Pty(socket, opts.onData);
  await opened;
  return pty;
}
