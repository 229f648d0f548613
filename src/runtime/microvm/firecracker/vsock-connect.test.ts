import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectVsock } from './vsock-connect.js';

/**
 * Plays Firecracker's vsock socket: reads `CONNECT <port>\n`, then runs `answer` on the connection
 * (which closes it to play "nothing listens on that guest port").
 */
function fakeVsock(path: string, answer: (sock: Socket, port: number, n: number) => void): Promise<Server> {
  let n = 0;
  const server = createServer((sock) => {
    let buf = '';
    const onData = (c: Buffer) => {
      buf += c.toString('latin1');
      const m = /^CONNECT (\d+)\n/.exec(buf);
      if (!m) return;
      sock.removeListener('data', onData);
      answer(sock, Number(m[1]), n++);
    };
    sock.on('data', onData);
    sock.on('error', () => undefined);
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function readAll(sock: Socket, bytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    sock.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (got.length >= bytes) resolve(got);
    });
    sock.on('error', reject);
  });
}

describe('connectVsock', () => {
  let dir: string;
  let uds: string;
  let server: Server | undefined;
  const open: Socket[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-vsock-'));
    uds = join(dir, 'v.sock');
  });
  afterEach(async () => {
    for (const s of open.splice(0)) s.destroy();
    if (server) await new Promise((r) => server!.close(r));
    server = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('hands back the stream after an OK line split across chunks, keeping bytes sent with it', async () => {
    let port = -1;
    server = await fakeVsock(uds, async (sock, p) => {
      port = p;
      sock.write('O');
      await sleep(20);
      sock.write('K 10737');
      await sleep(20);
      sock.write('41824\nhello');
      await sleep(20);
      sock.write(' world');
      sock.on('data', (c) => sock.write(c)); // echo from here on
    });
    const sock = await connectVsock(uds, 1024, 2_000);
    open.push(sock);
    expect(port).toBe(1024);
    // The caller attaches late: the early bytes must still be there.
    await sleep(50);
    const got = readAll(sock, 'hello world ping'.length);
    sock.write(' ping');
    expect(await got).toBe('hello world ping');
  });

  it('keeps bytes that arrive in the very same chunk as OK', async () => {
    server = await fakeVsock(uds, (sock) => sock.write(Buffer.from([...Buffer.from('OK 5\n'), 0, 1, 2, 0xff])));
    const sock = await connectVsock(uds, 52, 2_000);
    open.push(sock);
    const bytes = await new Promise<Buffer>((resolve) => sock.once('data', resolve));
    expect([...bytes]).toEqual([0, 1, 2, 0xff]);
  });

  it('retries while the socket is missing and while the guest is not listening', async () => {
    const start = connectVsock(uds, 1024, 5_000);
    await sleep(150); // ENOENT meanwhile
    let attempts = 0;
    server = await fakeVsock(uds, (sock, _p, n) => {
      attempts = n + 1;
      if (n < 3) sock.destroy(); // Firecracker closes: nothing listens on the guest port yet
      else sock.write('OK 1073741824\n');
    });
    const sock = await start;
    open.push(sock);
    expect(attempts).toBe(4);
  });

  it('gives up with UNAVAILABLE at the deadline', async () => {
    server = await fakeVsock(uds, (sock) => sock.destroy());
    const t0 = Date.now();
    await expect(connectVsock(uds, 1024, 300)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(Date.now() - t0).toBeLessThan(1_500);
  });

  it('does not retry an answer that is not the handshake', async () => {
    server = await fakeVsock(uds, (sock) => sock.write('HTTP/1.1 400 Bad Request\r\n\r\n'));
    await expect(connectVsock(uds, 1024, 2_000)).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});
