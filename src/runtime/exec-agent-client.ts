import { createConnection, type Socket } from 'node:net';
import { constants } from 'node:os';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { PrismError } from '../core/errors.js';
import type { ExecOptions } from './driver.js';
import { emptyIf, type AgentExit, type AgentProcess } from './agent-process.js';

/**
 * Client of the exec agent in guest/init/prism-init.c (the protocol is described there): one
 * connection per command, length-prefixed frames both ways. The oci driver connects to the agent's
 * unix socket; the docker driver reaches it through a `docker exec` of `prism-init relay`.
 */

const MAX_CHUNK = 1 << 20;
const SIGNAL_NAMES = new Map<number, string>(Object.entries(constants.signals).map(([name, n]) => [n, name]));

function frame(type: string, payload: Buffer): Buffer {
  const hdr = Buffer.alloc(5);
  hdr.write(type, 0, 'latin1');
  hdr.writeUInt32BE(payload.length, 1);
  return Buffer.concat([hdr, payload]);
}

export function startFrame(opts: ExecOptions, user?: string): Buffer {
  const env = Object.entries(opts.env).map(([k, v]) => `${k}=${v}`);
  const fields = [opts.cwd, opts.stdin || opts.tty ? 'stdin' : '', String(opts.argv.length), ...opts.argv, String(env.length), ...env];
  // Both trailing fields are optional; the size needs the user field before it ("" = root).
  if (user || opts.tty) fields.push(user ?? '');
  if (opts.tty) fields.push(sizeField(opts.tty.cols, opts.tty.rows));
  for (const f of fields) {
    if (f.includes('\0')) throw new PrismError('INVALID_ARGUMENT', 'command, environment and cwd must not contain NUL bytes');
  }
  return frame('S', Buffer.from(fields.map((f) => `${f}\0`).join(''), 'utf8'));
}

/** A terminal size as the agent reads it ("cols rows"); INVALID_ARGUMENT outside 1..65535. */
export function sizeField(cols: number, rows: number): string {
  for (const n of [cols, rows]) {
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new PrismError('INVALID_ARGUMENT', `terminal size must be 1-65535 columns and rows, got ${cols}x${rows}`);
  }
  return `${cols} ${rows}`;
}

/**
 * Connects and starts the command; rejects FAILED_PRECONDITION when no agent listens (task not running).
 * `user` is the agent's "uid gid groups" form; absent runs as the task's root.
 */
export function agentExec(socketPath: string, opts: ExecOptions, user?: string): Promise<AgentProcess> {
  const start = startFrame(opts, user);
  return new Promise((resolve, reject) => {
    const sock: Socket = createConnection(socketPath);
    sock.once('error', (e: NodeJS.ErrnoException) => {
      const notRunning = e.code === 'ECONNREFUSED' || e.code === 'ENOENT';
      reject(
        notRunning
          ? new PrismError('FAILED_PRECONDITION', 'the task is not running', { cause: e })
          : new PrismError('INTERNAL', `cannot reach the task's exec agent: ${e.message}`, { cause: e }),
      );
    });
    sock.once('connect', () => {
      sock.removeAllListeners('error');
      sock.write(start);
      resolve(attachAgent(sock, sock, opts.stdin || !!opts.tty, !!opts.tty));
    });
  });
}

/**
 * Speaks the protocol over `input` (frames from the agent) and `output` (frames to it), once the start
 * frame was sent. The end of the command is when `input` closes.
 */
export function attachAgent(input: Readable, output: Writable, withStdin: boolean, tty = false): AgentProcess {
  const stdout = new PassThrough();
  const stderr = emptyIf(tty);
  let exit: AgentExit | undefined;
  let buf: Buffer = Buffer.alloc(0);
  const send = (type: string, payload: Buffer) => {
    // After the exit frame the agent only waits for this side to close (guest/init/exec-agent.c finish).
    if (!exit && !output.destroyed && !output.writableEnded) output.write(frame(type, payload));
  };
  // Back-pressure: a slow reader of either stream pauses the socket, and so the command.
  const push = (s: PassThrough, data: Buffer) => {
    if (!s.write(data)) {
      input.pause();
      s.once('drain', () => input.resume());
    }
  };
  input.on('data', (chunk: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      const type = String.fromCharCode(buf[0]!);
      const payload = buf.subarray(5, 5 + len);
      buf = buf.subarray(5 + len);
      if (type === 'O') push(stdout, Buffer.from(payload));
      else if (type === 'E') push(tty ? stdout : stderr, Buffer.from(payload)); // on a tty: the agent's own messages
      else if (type === 'X') {
        const [code, sig] = payload.toString().split(' ').map(Number);
        const name = sig ? SIGNAL_NAMES.get(sig) : undefined;
        exit = { exitCode: code ?? 1, ...(name ? { signal: name } : {}) };
      }
    }
  });
  const exitP = new Promise<AgentExit>((resolve) => {
    input.once('close', () => {
      stdout.end();
      stderr.end();
      // No exit frame: the task ended under the command (stopped or destroyed mid-exec).
      const result = exit ?? { exitCode: 137, signal: 'SIGKILL' };
      // Resolve once both streams delivered everything they had to their reader.
      Promise.all([stdout, stderr].map((s) => finished(s).catch(() => undefined))).then(() => resolve(result));
    });
  });
  input.on('error', () => undefined); // surfaces as 'close'
  if ((output as unknown) !== input) output.on('error', () => undefined);
  let stdin: Writable | null = null;
  if (withStdin) {
    stdin = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (let i = 0; i < chunk.length; i += MAX_CHUNK) send('I', chunk.subarray(i, i + MAX_CHUNK));
        if (output.writableNeedDrain) output.once('drain', () => cb());
        else cb();
      },
      final(cb) {
        send('C', Buffer.alloc(0));
        cb();
      },
    });
  }
  return {
    stdin,
    stdout,
    stderr,
    exit: exitP,
    kill(signal: NodeJS.Signals) {
      send('K', Buffer.from([constants.signals[signal] ?? constants.signals.SIGKILL]));
    },
    ...(tty ? { resize: (cols: number, rows: number) => send('R', Buffer.from(sizeField(cols, rows))) } : {}),
  };
}
