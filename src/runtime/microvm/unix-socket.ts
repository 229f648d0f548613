import { createConnection, type Socket } from 'node:net';

/** Connects to a unix socket; rejects with the socket's error (ENOENT, ECONNREFUSED) or on timeout. */
export function dialUnix(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    const timer = setTimeout(() => (sock.destroy(), reject(new Error('connect timed out'))), Math.max(1, timeoutMs));
    sock.once('error', (e) => (clearTimeout(timer), reject(e)));
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
  });
}
