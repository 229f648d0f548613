import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient, type QmpEvent } from './qmp.js';

/** Speaks enough QMP: greeting, capabilities negotiation, a few commands, events in between. */
function fakeQemu(path: string, seen: string[]): Promise<Server> {
  const server = createServer((sock: Socket) => {
    sock.write('{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}\r\n');
    let buf = '';
    sock.on('data', (c) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string; arguments?: unknown };
        buf = buf.slice(nl + 1);
        seen.push(msg.execute);
        const reply = (r: object) => sock.write(`${JSON.stringify({ ...r, id: msg.id })}\r\n`);
        if (msg.execute === 'qmp_capabilities') reply({ return: {} });
        else if (msg.execute === 'query-status') {
          sock.write('{"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}\r\n');
          reply({ return: { running: true, singlestep: false, status: 'running' } });
        } else if (msg.execute === 'slow') setTimeout(() => reply({ return: 'slow' }), 50);
        else if (msg.execute === 'fast') reply({ return: msg.arguments });
        else if (msg.execute === 'quit') sock.destroy();
        else reply({ error: { class: 'CommandNotFound', desc: `The command ${msg.execute} has not been found` } });
      }
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

describe('QmpClient', () => {
  let dir: string;
  let server: Server;
  const seen: string[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-qmp-'));
    seen.length = 0;
    server = await fakeQemu(join(dir, 'qmp.sock'), seen);
  });
  afterEach(async () => {
    server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('negotiates capabilities, matches replies by id and exposes events', async () => {
    const qmp = await QmpClient.connect(join(dir, 'qmp.sock'));
    const events: QmpEvent[] = [];
    qmp.on('event', (e: QmpEvent) => events.push(e));
    expect(await qmp.queryStatus()).toMatchObject({ running: true, status: 'running' });
    expect(events.map((e) => e.event)).toEqual(['RESUME']);
    const [slow, fast] = await Promise.all([qmp.execute('slow'), qmp.execute('fast', { a: 1 })]);
    expect(slow).toBe('slow');
    expect(fast).toEqual({ a: 1 });
    await expect(qmp.execute('nope')).rejects.toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('CommandNotFound') });
    expect(seen[0]).toBe('qmp_capabilities');
    qmp.close();
  });

  it('treats the connection closing on quit as success and fails later commands', async () => {
    const qmp = await QmpClient.connect(join(dir, 'qmp.sock'));
    await qmp.quit();
    await expect(qmp.execute('fast')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('rejects UNAVAILABLE when nothing listens', async () => {
    await expect(QmpClient.connect(join(dir, 'none.sock'), 500)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
