import { createConnection, type Socket } from 'node:net';
import { PrismError } from '../../../core/errors.js';

/**
 * Host-initiated vsock connections through Firecracker's vsock unix socket (docs/vsock.md, "Host-
 * Initiated Connections"): connect to `uds_path`, send `CONNECT <port>\n`, read `OK <hostport>\n`, then
 * the connection is the raw stream to the guest's listener. When nothing listens on the guest port,
 * Firecracker closes the connection instead of answering; while the VM is starting the socket may not
 * exist yet. Both are retried until the deadline. Tested against a fake of that socket; untested
 * against a real Firecracker.
 */

const RETRY_MS = 50;
/** "OK " + a u32 + "\n" is short; a longer line without a newline is not Firecracker talking. */
const MAX_LINE = 64;

class Refused extends Error {}

/**
 * Resolves with a socket positioned just after the `OK ...\n` line: bytes the guest sent in the same
 * chunk are pushed back, and the socket is left in its initial (not flowing) mode, so the caller's
 * first 'data' listener receives them. UNAVAILABLE if the guest does not accept within `timeoutMs`,
 * INTERNAL if the other end answers something that is not the handshake.
 */
export async function connectVsock(udsPath: string, port: number, timeoutMs: number): Promise<Socket> {
  if (!(Number.isInteger(port) && port >= 0 && port <= 0xffffffff)) throw new PrismError('INVALID_ARGUMENT', `vsock port must be a u32, got ${port}`);
  const deadline = Date.now() + timeoutMs;
  let last: Error | undefined;
  for (;;) {
    try {
      return await attempt(udsPath, port, deadline);
    } catch (e) {
      if (!(e instanceof Refused)) throw e;
      last = e;
    }
    if (Date.now() + RETRY_MS >= deadline) break;
    await new Promise((r) => setTimeout(r, RETRY_MS));
  }
  throw new PrismError('UNAVAILABLE', `nothing accepted vsock port ${port} through ${udsPath} within ${timeoutMs} ms${last ? ` (${last.message})` : ''}`, {
    cause: last,
  });
}

function attempt(udsPath: string, port: number, deadline: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const sock = createConnection(udsPath);
    let line = Buffer.alloc(0);
    let settled = false;
    const timer = setTimeout(() => fail(new Refused('no answer to CONNECT')), Math.max(0, deadline - Date.now()));
    const cleanup = () => {
      settled = true;
      clearTimeout(timer);
      sock.removeListener('readable', onReadable);
      sock.removeListener('error', onError);
      sock.removeListener('close', onClose);
    };
    const fail = (e: Error) => {
      if (settled) return;
      cleanup();
      sock.destroy();
      reject(e);
    };
    const onError = (e: NodeJS.ErrnoException) => fail(new Refused(e.code ?? e.message));
    const onClose = () => fail(new Refused('connection closed before OK (guest not listening yet)'));
    const onReadable = () => {
      let chunk: Buffer | null;
      while (!settled && (chunk = sock.read() as Buffer | null) !== null) {
        line = Buffer.concat([line, chunk]);
        const nl = line.indexOf(0x0a);
        if (nl < 0) {
          if (line.length > MAX_LINE) fail(new PrismError('INTERNAL', `unexpected answer to CONNECT on ${udsPath}: ${line.subarray(0, MAX_LINE).toString('latin1')}`));
          continue;
        }
        const text = line.subarray(0, nl).toString('latin1');
        if (!/^OK \d+$/.test(text)) {
          fail(new PrismError('INTERNAL', `unexpected answer to CONNECT ${port} on ${udsPath}: ${JSON.stringify(text)}`));
          return;
        }
        cleanup();
        // Pushed back before the 'readable' listener goes: the stream then returns to its initial mode.
        if (nl + 1 < line.length) sock.unshift(line.subarray(nl + 1));
        resolve(sock);
      }
    };
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.on('readable', onReadable);
    sock.once('connect', () => sock.write(`CONNECT ${port}\n`));
  });
}
