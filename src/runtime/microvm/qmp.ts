import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { PrismError } from '../../core/errors.js';

/**
 * A minimal QMP client (QEMU Machine Protocol: newline-delimited JSON over a unix socket). After the
 * greeting it negotiates capabilities; each `execute` carries an id so replies are matched even if
 * QEMU interleaves events. Events are emitted as 'event' ({ event, data, timestamp }).
 */

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

export class QmpClient extends EventEmitter {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;

  private constructor(private readonly sock: Socket) {
    super();
  }

  /** Connects, reads the greeting and enters command mode. UNAVAILABLE when QEMU is not there. */
  static async connect(path: string, timeoutMs = 5_000): Promise<QmpClient> {
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = createConnection(path);
      const timer = setTimeout(() => (s.destroy(), reject(new PrismError('UNAVAILABLE', `QMP at ${path} did not accept within ${timeoutMs} ms`))), timeoutMs);
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(new PrismError('UNAVAILABLE', `cannot reach QMP at ${path}: ${e.message}`, { cause: e }));
      });
      s.once('connect', () => (clearTimeout(timer), resolve(s)));
    });
    const client = new QmpClient(sock);
    try {
      await client.handshake(timeoutMs);
      return client;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  private handshake(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new PrismError('UNAVAILABLE', `no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
      let greeted = false;
      this.sock.on('error', () => undefined);
      this.sock.on('close', () => {
        this.closed = true;
        clearTimeout(timer);
        const err = new PrismError('UNAVAILABLE', 'QMP connection closed');
        if (!greeted) reject(err);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        this.emit('close');
      });
      this.sock.on('data', (chunk: Buffer) => {
        this.buf += chunk.toString('utf8');
        let nl: number;
        while ((nl = this.buf.indexOf('\n')) >= 0) {
          const line = this.buf.slice(0, nl).trim();
          this.buf = this.buf.slice(nl + 1);
          if (!line) continue;
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (!greeted && 'QMP' in msg) {
            greeted = true;
            this.execute('qmp_capabilities').then(() => (clearTimeout(timer), resolve()), (e: Error) => (clearTimeout(timer), reject(e)));
          } else {
            this.onMessage(msg);
          }
        }
      });
    });
  }

  private onMessage(msg: Record<string, unknown>): void {
    if (typeof msg.event === 'string') {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new PrismError('INTERNAL', `QMP ${p.command} failed: ${err.class ?? 'Error'}: ${err.desc ?? 'unknown'}`));
    } else {
      p.resolve(msg.return);
    }
  }

  /** Runs one command; resolves with its `return` value, rejects INTERNAL with QEMU's error. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.closed) return Promise.reject(new PrismError('UNAVAILABLE', 'QMP connection closed'));
    const id = `prism-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new PrismError('DEADLINE_EXCEEDED', `QMP ${command} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        command,
        resolve: (v) => (clearTimeout(timer), resolve(v as T)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.sock.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  /** `query-status` -> e.g. { running: true, status: 'running' }. */
  queryStatus(): Promise<{ running: boolean; status: string }> {
    return this.execute('query-status');
  }

  /** `quit`: QEMU exits; the connection closing before the reply counts as success. */
  async quit(): Promise<void> {
    await this.execute('quit').catch((e: unknown) => {
      if (!(e instanceof PrismError && e.code === 'UNAVAILABLE')) throw e;
    });
  }

  close(): void {
    this.sock.destroy();
  }
}
