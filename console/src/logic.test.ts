import { describe, expect, it } from 'vitest';
import { plot } from './chart.js';
import { ago, bytes, joinPath, parentDir, percent } from './format.js';
import { href, parseRoute } from './route.js';
import { Session, TOKEN_KEY, describeError } from './session.js';
import { PrismApiError } from '../../src/sdk/browser.js';

class MemoryStore {
  items = new Map<string, string>();
  getItem(k: string) {
    return this.items.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.items.set(k, v);
  }
  removeItem(k: string) {
    this.items.delete(k);
  }
}

/** A fake API: accepts one token; counts calls. */
function fakeApi(good: string) {
  const seen: { url: string; auth: string | null }[] = [];
  let accept = good;
  const f: typeof fetch = async (input, init) => {
    const auth = new Headers(init?.headers).get('authorization');
    seen.push({ url: String(input), auth });
    if (auth !== `Bearer ${accept}`) return new Response(JSON.stringify({ error: { code: 'UNAUTHENTICATED', message: 'missing or invalid API token' } }), { status: 401 });
    return new Response(JSON.stringify({ nodes: [] }), { status: 200, headers: { 'content-type': 'application/json' } });
  };
  return { fetch: f, seen, revoke: () => (accept = '') };
}

describe('console session', () => {
  it('keeps a token only after the API accepted it, and sends it as a bearer header', async () => {
    const api = fakeApi('good');
    const store = new MemoryStore();
    const s = new Session(store, { url: 'http://prism.test', fetch: api.fetch });
    await expect(s.login('bad')).rejects.toThrow(/not accepted/);
    expect(store.items.size).toBe(0);
    expect(s.client).toBeUndefined();
    await expect(s.login('  ')).rejects.toThrow(/Enter an API token/);
    await s.login(' good ');
    expect(store.getItem(TOKEN_KEY)).toBe('good');
    await s.client!.nodes.list();
    expect(api.seen.at(-1)).toEqual({ url: 'http://prism.test/api/v1/nodes', auth: 'Bearer good' });
    expect(api.seen.every((r) => !r.url.includes('good'))).toBe(true);
  });

  it('resumes from the stored token, and ends with a notice on the first 401', async () => {
    const api = fakeApi('good');
    const store = new MemoryStore();
    store.setItem(TOKEN_KEY, 'good');
    const s = new Session(store, { url: 'http://prism.test', fetch: api.fetch });
    const states: (string | undefined)[] = [];
    s.subscribe((st) => states.push(st.client ? 'in' : st.notice));
    expect(s.client).toBeDefined();
    api.revoke();
    await expect(s.client!.nodes.list()).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    expect(s.client).toBeUndefined();
    expect(store.getItem(TOKEN_KEY)).toBeNull();
    expect(states).toEqual([expect.stringContaining('no longer accepted')]);
  });

  it('logs out by choice without a notice', async () => {
    const api = fakeApi('good');
    const s = new Session(new MemoryStore(), { url: 'http://prism.test', fetch: api.fetch });
    await s.login('good');
    s.logout();
    expect(s.client).toBeUndefined();
    expect(s.notice).toBeUndefined();
  });

  it('describes errors without stack traces', () => {
    expect(describeError(new PrismApiError('NOT_FOUND', "sandbox 'x' not found"))).toBe("sandbox 'x' not found (NOT_FOUND)");
    const e = new Error('boom');
    expect(describeError(e)).toBe('boom');
    expect(describeError(e)).not.toContain('at ');
  });
});

describe('console routes', () => {
  it('parses and builds fragments', () => {
    expect(parseRoute('')).toEqual({ page: 'sandboxes' });
    expect(parseRoute('#/nodes')).toEqual({ page: 'nodes' });
    expect(parseRoute('#/sandboxes/sb-1')).toEqual({ page: 'sandbox', id: 'sb-1', tab: 'terminal' });
    expect(parseRoute('#/sandboxes/sb-1/files')).toEqual({ page: 'sandbox', id: 'sb-1', tab: 'files' });
    expect(parseRoute('#/sandboxes/sb-1/nope')).toEqual({ page: 'sandbox', id: 'sb-1', tab: 'terminal' });
    expect(parseRoute('#/whatever')).toEqual({ page: 'sandboxes' });
    const r = { page: 'sandbox', id: 'a b/c', tab: 'metrics' } as const;
    expect(parseRoute(href(r))).toEqual(r);
  });
});

describe('console formatting', () => {
  it('formats sizes, percentages, ages and paths', () => {
    expect(bytes(0)).toBe('0 B');
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(512 * 1024 * 1024)).toBe('512 MiB');
    expect(bytes(-1)).toBe('–');
    expect(percent(2.345)).toBe('2.3%');
    expect(percent(55.5)).toBe('56%');
    const now = Date.parse('2026-01-01T12:00:00Z');
    expect(ago('2026-01-01T11:59:30Z', now)).toBe('30 s ago');
    expect(ago('2026-01-01T11:00:00Z', now)).toBe('1 h ago');
    expect(ago('2025-12-01T00:00:00Z', now)).toBe('2025-12-01 00:00');
    expect(ago('nonsense', now)).toBe('–');
    expect(parentDir('/a/b/')).toBe('/a');
    expect(parentDir('/a')).toBe('/');
    expect(parentDir('/')).toBe('/');
    expect(joinPath('/', 'x')).toBe('/x');
    expect(joinPath('/tmp/', 'x')).toBe('/tmp/x');
  });
});

describe('metrics chart geometry', () => {
  it('scales time across and values up from the bottom, clamped to the ceiling', () => {
    const p = plot([{ t: 0, v: 0 }, { t: 5, v: 50 }, { t: 10, v: 150 }], 100, 50, 100);
    expect(p.path).toBe('M0 50 L50 25 L100 0');
    expect(p.max).toBe(100);
  });
  it('draws nothing without points, and one point at the right edge', () => {
    expect(plot([], 100, 50).path).toBe('');
    expect(plot([{ t: 1, v: 1 }], 100, 50).path).toBe('M100 0');
  });
  it('scales to the largest value when no ceiling is given', () => {
    expect(plot([{ t: 0, v: 2 }, { t: 1, v: 4 }], 10, 10).max).toBe(4);
  });
});
