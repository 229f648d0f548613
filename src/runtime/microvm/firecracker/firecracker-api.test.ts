import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PrismError } from '../../../core/errors.js';
import { FirecrackerApi } from './firecracker-api.js';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

/** Answers like Firecracker's API server: 204 on success, 400 + fault_message on a refused request. */
function fakeApi(path: string, seen: Seen[]): Promise<Server> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      const reply = (status: number, payload?: object | string) => {
        res.writeHead(status, payload === undefined ? {} : { 'Content-Type': 'application/json' });
        res.end(payload === undefined ? undefined : typeof payload === 'string' ? payload : JSON.stringify(payload));
      };
      if (req.url === '/machine-config' && req.method === 'GET') reply(200, { vcpu_count: 1, mem_size_mib: 128, smt: false });
      else if (req.url === '/actions' && JSON.parse(body).action_type === 'InstanceStart') reply(400, { fault_message: 'The requested operation is not supported after starting the microVM.' });
      else if (req.url === '/boom') reply(500, 'not json at all');
      else if (req.url === '/garbage') reply(200, '{oops');
      else if (req.url === '/slow') setTimeout(() => reply(204), 1_000);
      else reply(204);
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

describe('FirecrackerApi', () => {
  let dir: string;
  let server: Server;
  let seen: Seen[];
  let api: FirecrackerApi;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prism-fc-api-'));
    seen = [];
    server = await fakeApi(join(dir, 'fc.sock'), seen);
    api = new FirecrackerApi(join(dir, 'fc.sock'));
  });
  afterEach(async () => {
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  it('PUT and PATCH send JSON with a Content-Length', async () => {
    await api.put('/machine-config', { vcpu_count: 2, mem_size_mib: 256, smt: false });
    await api.patch('/vm', { state: 'Paused' });
    expect(seen.map((s) => [s.method, s.url, s.body])).toEqual([
      ['PUT', '/machine-config', '{"vcpu_count":2,"mem_size_mib":256,"smt":false}'],
      ['PATCH', '/vm', '{"state":"Paused"}'],
    ]);
    expect(seen[0]!.headers['content-type']).toBe('application/json');
    expect(seen[0]!.headers['content-length']).toBe(String(seen[0]!.body.length));
    expect(seen[0]!.headers['transfer-encoding']).toBeUndefined();
  });

  it('GET parses the JSON answer', async () => {
    await expect(api.get('/machine-config')).resolves.toEqual({ vcpu_count: 1, mem_size_mib: 128, smt: false });
    expect(seen[0]!.body).toBe('');
    await expect(api.get('/garbage')).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it("maps a refused request to FAILED_PRECONDITION with Firecracker's fault_message", async () => {
    const err = await api.put('/actions', { action_type: 'InstanceStart' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrismError);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect((err as Error).message).toBe(
      'Firecracker PUT /actions failed (HTTP 400): The requested operation is not supported after starting the microVM.',
    );
  });

  it('other failures are INTERNAL with the body as sent', async () => {
    await expect(api.put('/boom', {})).rejects.toMatchObject({ code: 'INTERNAL', message: 'Firecracker PUT /boom failed (HTTP 500): not json at all' });
  });

  it('a missing socket is UNAVAILABLE, a silent one DEADLINE_EXCEEDED', async () => {
    await expect(new FirecrackerApi(join(dir, 'nope.sock')).put('/vm', {})).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(new FirecrackerApi(join(dir, 'fc.sock'), 100).put('/slow', {})).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
  });
});
