import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, integrationSkipReason, startPrismd, type Prismd } from '../integration/prismd-harness.js';

/** Authentication on every route, against a real prismd (auth is on by default). */
const skip = integrationSkipReason();

describe.skipIf(!!skip)('API authentication', () => {
  let d: Prismd;
  let routes: { method: string; path: string }[] = [];

  beforeAll(async () => {
    d = await startPrismd();
    const doc = (await call(d.url, 'GET', '/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const method of Object.keys(ops)) routes.push({ method: method.toUpperCase(), path: path.replace(/^\/api\/v1/, '').replace(/\{[^}]+\}/g, 'x') });
    }
  });
  afterAll(async () => {
    await d?.dispose();
  });

  it('writes the admin token once, mode 0600, and serves /health without one', async () => {
    const { statSync } = await import('node:fs');
    expect(statSync(`${d.dataDir}/admin-token`).mode & 0o777).toBe(0o600);
    expect(d.token).toMatch(/^prism_[0-9a-f]{16}_/);
    const health = await fetch(`${d.url}/api/v1/health`);
    expect(health.status).toBe(200);
  });

  it('answers 401 with the same body on every other route for a missing, malformed or wrong token', async () => {
    expect(routes.length).toBeGreaterThan(15);
    const secret = d.token.slice(-43);
    const wrong = [
      undefined,
      'Bearer',
      'Bearer ',
      `Basic ${Buffer.from(`admin:${d.token}`).toString('base64')}`,
      `Bearer ${d.token.replace(secret, secret.split('').reverse().join(''))}`,
      `Bearer ${d.token}x`,
      `bearer${d.token}`,
    ];
    for (const r of routes.filter((x) => x.path !== '/health')) {
      for (const auth of wrong) {
        const res = await fetch(`${d.url}/api/v1${r.path}`, {
          method: r.method,
          headers: auth ? { authorization: auth, 'content-type': 'application/json' } : { 'content-type': 'application/json' },
          ...(r.method === 'GET' || r.method === 'DELETE' ? {} : { body: '{}' }),
        });
        expect(res.status, `${r.method} ${r.path} with ${auth}`).toBe(401);
        const body = (await res.json()) as { error: { code: string; message: string } };
        // The join routes take the cluster's join token, not an API token (src/api/routes/cluster-routes.ts).
        if (r.path.startsWith('/cluster/join/') || r.path === '/cluster/join') expect(body.error.code).toBe('UNAUTHENTICATED');
        else expect(body).toEqual({ error: { code: 'UNAUTHENTICATED', message: 'missing or invalid API token (send Authorization: Bearer <token>)' } });
      }
    }
    // Unknown routes do not reveal themselves either.
    expect((await fetch(`${d.url}/api/v1/nope`)).status).toBe(401);
  });

  it('keeps tokens, node removal and the join token to admin tokens', async () => {
    const made = await call(d.url, 'POST', '/tokens', { name: 'plain' });
    expect(made.status).toBe(201);
    expect((made.body as { admin: boolean }).admin).toBe(false);
    const plain = (made.body as { token: string }).token;
    const as = (method: string, path: string, body?: unknown) => call(d.url, method, path, body, { authorization: `Bearer ${plain}` });
    expect((await as('GET', '/sandboxes')).status).toBe(200);
    for (const [method, path, body] of [['GET', '/tokens'], ['POST', '/tokens', { name: 'mine' }], ['POST', '/tokens', { name: 'boss', admin: true }], ['DELETE', '/tokens/admin'], ['DELETE', '/nodes/nope'], ['GET', '/cluster/join-token'], ['POST', '/cluster/join-token']] as const) {
      const r = await as(method, path, body);
      expect(r.status, `${method} ${path}`).toBe(403);
      expect((r.body as { error: { code: string; message: string } }).error.code).toBe('PERMISSION_DENIED');
    }
    // Nothing changed: no token made or revoked.
    const names = ((await call(d.url, 'GET', '/tokens')).body as { tokens: { name: string; admin: boolean }[] }).tokens;
    expect(names.map((t) => t.name).sort()).toEqual(['admin', 'plain']);
    expect(names.find((t) => t.name === 'admin')?.admin).toBe(true);
    // An admin may make another admin.
    const boss = await call(d.url, 'POST', '/tokens', { name: 'boss', admin: true });
    expect(boss.status).toBe(201);
    expect((await call(d.url, 'GET', '/tokens', undefined, { authorization: `Bearer ${(boss.body as { token: string }).token}` })).status).toBe(200);
    for (const n of ['plain', 'boss']) expect((await call(d.url, 'DELETE', `/tokens/${n}`)).status).toBe(204);
  });

  it('accepts a new token at once and refuses it at once when revoked; the admin token cannot be read back', async () => {
    const made = await call(d.url, 'POST', '/tokens', { name: 'worker' });
    expect(made.status).toBe(201);
    const token = (made.body as { token: string }).token;
    const use = () => fetch(`${d.url}/api/v1/sandboxes`, { headers: { authorization: `Bearer ${token}` } });
    expect((await use()).status).toBe(200);
    const listed = (await call(d.url, 'GET', '/tokens')).body as { tokens: object[] };
    expect(JSON.stringify(listed)).not.toContain(token.slice(-43));
    expect(JSON.stringify(listed)).not.toContain(d.token.slice(-43));
    expect((await call(d.url, 'DELETE', '/tokens/worker')).status).toBe(204);
    expect((await use()).status).toBe(401);
    expect((await call(d.url, 'POST', '/tokens', { name: 'Bad!' })).status).toBe(400);
    expect((await call(d.url, 'POST', '/tokens', { name: 'admin' })).status).toBe(409);
  });

  it('keeps the tokens across a restart', async () => {
    d = await d.restart();
    expect((await call(d.url, 'GET', '/sandboxes')).status).toBe(200);
  });
});
