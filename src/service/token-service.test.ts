import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { silentLogger } from './logger.js';
import { TokenService } from './token-service.js';

const cleanups: (() => unknown)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

async function tokens(store = SqliteStore.open(':memory:')) {
  const svc = new TokenService(store, silentLogger);
  await svc.start();
  cleanups.push(() => store.close(), () => svc.stop());
  return { svc, store };
}

describe('TokenService', () => {
  it('creates tokens that verify, stores only a hash, and lists without secrets', async () => {
    const { svc, store } = await tokens();
    expect(svc.empty()).toBe(true);
    const t = await svc.create('admin');
    expect(t.token).toMatch(/^prism_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(svc.verify(t.token)).toBe(t.id);
    const raw = (await store.list('/')).map((kv) => kv.value).join('\n');
    expect(raw).not.toContain(t.token.slice(-43));
    expect(svc.list()).toEqual([{ id: t.id, name: 'admin', createdAt: t.createdAt, admin: false }]);
    await expect(svc.create('admin')).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    await expect(svc.create('Bad Name')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('knows admin tokens from the others; tokens made before roles count as admin', async () => {
    const { svc, store } = await tokens();
    const admin = await svc.create('root', { admin: true });
    const user = await svc.create('worker');
    expect(admin.admin).toBe(true);
    expect(user.admin).toBe(false);
    expect(svc.identify(admin.token)).toEqual({ id: admin.id, admin: true });
    expect(svc.identify(user.token)).toEqual({ id: user.id, admin: false });
    expect(svc.identify('prism_nope')).toBeUndefined();
    // A record written before roles existed has no `admin` field: it could do everything, and still can.
    const legacyId = '0123456789abcdef';
    const secret = 'x'.repeat(43);
    const { createHash } = await import('node:crypto');
    await store.put(`/prism/tokens/${legacyId}`, JSON.stringify({ id: legacyId, name: 'old', hash: createHash('sha256').update(secret).digest('hex'), createdAt: new Date().toISOString() }));
    await new Promise((r) => setTimeout(r, 50)); // the watch delivers it
    expect(svc.identify(`prism_${legacyId}_${secret}`)).toEqual({ id: legacyId, admin: true });
    expect(svc.list().find((t) => t.name === 'old')?.admin).toBe(true);
  });

  it('refuses wrong, truncated, foreign and malformed tokens', async () => {
    const { svc } = await tokens();
    const t = await svc.create('ci');
    const secret = t.token.slice(-43);
    const flipped = secret[0] === 'A' ? `B${secret.slice(1)}` : `A${secret.slice(1)}`;
    for (const bad of ['', 'prism', t.token.slice(0, -1), t.token.replace(secret, flipped), `prism_0000000000000000_${secret}`, `${t.token}x`, secret]) {
      expect(svc.verify(bad), bad).toBeUndefined();
    }
  });

  it('revokes at once here, and on another node as soon as the change arrives', async () => {
    const store = SqliteStore.open(':memory:');
    const { svc: a } = await tokens(store);
    const b = new TokenService(store, silentLogger);
    await b.start();
    cleanups.push(() => b.stop());
    const t = await a.create('shared');
    await new Promise((r) => setTimeout(r, 20));
    expect(b.verify(t.token)).toBe(t.id);
    await b.revoke('shared');
    expect(b.verify(t.token)).toBeUndefined();
    await new Promise((r) => setTimeout(r, 20));
    expect(a.verify(t.token)).toBeUndefined();
    await expect(a.revoke('shared')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    // The name is free again.
    expect((await a.create('shared')).name).toBe('shared');
  });
});
