import { createServer } from 'node:net';

/**
 * Whether something could listen on host:port right now: binds, then closes at once. 'free', or the
 * bind's error code (EADDRINUSE, EACCES, EADDRNOTAVAIL, ...). Racy by nature: it lets prismd refuse
 * before it has made anything, and `prismd doctor` say so; the real listen can still fail.
 */
export function tryListen(host: string, port: number): Promise<'free' | string> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve('free')));
  });
}

/** Why prismd cannot listen on the API address, from {@link tryListen}'s error code. */
export function listenProblem(host: string, port: number, code: string): string {
  const addr = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  switch (code) {
    case 'EADDRINUSE':
      return `the API address ${addr} is in use (another prismd, or another program; choose another with --api)`;
    case 'EACCES':
      return `cannot listen on ${addr}: permission denied (ports below 1024 need root)`;
    case 'EADDRNOTAVAIL':
      return `cannot listen on ${addr}: ${host} is not an address of this host`;
    default:
      return `cannot listen on ${addr}: ${code}`;
  }
}
