import type { WebSocket } from 'ws';
import { PrismApiError, connectionError, errorFromResponse } from './errors.js';

/**
 * Interactive terminals (`sandbox.pty()`): the client side of `GET /sandboxes/:id/pty` (docs/api.md).
 * Node 20 has no global WebSocket, so this uses the `ws` package (pure JS), loaded on first use.
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

/** Where and how to open the socket: given by the client, which holds the token and trusted CA. */
export interface SocketDialer {
  readonly baseUrl: string;
  /** Headers and TLS options for `new WebSocket(url, options)`. */
  socketOptions(): { headers: Record<string, string>; ca?: string | Buffer };
}

/** An open terminal. Closing it (or the process exiting) kills the command and all it started. */
export class Pty {
  readonly #ws: WebSocket;
  readonly #exit: Promise<PtyExit>;

  /** @internal use `SandboxHandle.pty()` */
  constructor(ws: WebSocket, onData: (chunk: Uint8Array) => void) {
    this.#ws = ws;
    this.#exit = new Promise((resolve, reject) => {
      let exit: PtyExit | undefined;
      let error: PrismApiError | undefined;
      ws.on('message', (data, isBinary) => {
        const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
        if (isBinary) return onData(new Uint8Array(buf.buffer, buf.byteOffset, buf.length));
        const msg = JSON.parse(buf.toString('utf8')) as { type: string; exitCode?: number; signal?: string | null; error?: { code: string; message: string } };
        if (msg.type === 'exit') exit = { exitCode: msg.exitCode ?? 1, ...(msg.signal ? { signal: msg.signal } : {}) };
        else if (msg.type === 'error' && msg.error) error = new PrismApiError(msg.error.code, msg.error.message);
      });
      ws.on('error', () => undefined); // surfaces as 'close'
      ws.once('close', (code) => {
        if (exit) resolve(exit);
        else reject(error ?? new PrismApiError('UNAVAILABLE', `the terminal connection closed (code ${code}) before the command exited; it was killed`));
      });
    });
    this.#exit.catch(() => undefined); // a caller who never waits must not see an unhandled rejection
  }

  /** Sends keystrokes (a string is sent as UTF-8); 0x03 is Ctrl-C. */
  write(data: string | Uint8Array): void {
    if (this.#ws.readyState === this.#ws.OPEN) this.#ws.send(typeof data === 'string' ? Buffer.from(data, 'utf8') : data, { binary: true });
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
    if (this.#ws.readyState === this.#ws.OPEN || this.#ws.readyState === this.#ws.CONNECTING) this.#ws.close(1000);
  }

  #control(msg: object): void {
    if (this.#ws.readyState === this.#ws.OPEN) this.#ws.send(JSON.stringify(msg));
  }
}

/** Opens `path` (under /api/v1) as a terminal; rejects with the API's error when it refuses. */
export async function openPty(dialer: SocketDialer, path: string, opts: PtyOptions): Promise<Pty> {
  const q = new URLSearchParams({ cols: String(opts.cols ?? 80), rows: String(opts.rows ?? 24) });
  if (opts.cmd) q.set('cmd', JSON.stringify(opts.cmd));
  const url = `${dialer.baseUrl}/api/v1${path}?${q.toString()}`;
  const { WebSocket } = await import('ws');
  const ws = new WebSocket(url, { ...dialer.socketOptions(), perMessageDeflate: false });
  return new Promise<Pty>((resolve, reject) => {
    // Listeners go on before 'open' so that the first bytes (a prompt) are never missed.
    const pty = new Pty(ws, opts.onData);
    ws.once('open', () => resolve(pty));
    ws.once('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        req.destroy();
        const answer = new Response(Buffer.concat(chunks), { status: res.statusCode ?? 500 });
        void errorFromResponse(answer, `GET ${path}`).then(reject);
      });
    });
    ws.once('error', (e) => reject(connectionError(dialer.baseUrl, e)));
  });
}
