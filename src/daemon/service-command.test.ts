import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { systemServiceHost } from './service-command.js';

let server: Server | undefined;
afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

async function serve(status: number): Promise<string> {
  server = createServer((_req, res) => res.writeHead(status).end('{}'));
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return `http://127.0.0.1:${port}/api/v1/health`;
}

describe('the real service host', () => {
  it('returns a command\'s exit code and output instead of throwing; a missing command is an error', async () => {
    const host = systemServiceHost();
    expect(await host.run('sh', ['-c', 'echo out; echo err >&2; exit 3'])).toEqual({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(await host.run('true', [])).toEqual({ code: 0, stdout: '', stderr: '' });
    await expect(host.run('/nonexistent/systemctl', [])).rejects.toThrow(/cannot run \/nonexistent\/systemctl/);
  });

  it('is healthy only on a 2xx answer', async () => {
    const host = systemServiceHost();
    expect(await host.healthy(await serve(200))).toBe(true);
    await new Promise<void>((r) => server!.close(() => r()));
    const url = await serve(503);
    expect(await host.healthy(url)).toBe(false);
    await new Promise<void>((r) => server!.close(() => r()));
    server = undefined;
    expect(await host.healthy(url)).toBe(false); // nothing listens
  });
});
