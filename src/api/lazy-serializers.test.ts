import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { startInProcessNode } from '../daemon/in-process-api.test-support.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { LazySerializers } from './lazy-serializers.js';

describe('LazySerializers', () => {
  it('compiles no response serializer of the API at start-up, one on first use, and all of them on demand', async () => {
    const serializers = new LazySerializers();
    const store = SqliteStore.open(':memory:');
    const n = await startInProcessNode({ store, id: 'node-a', serializers });
    try {
      const atStart = serializers.pendingCount;
      expect(atStart).toBeGreaterThan(100);
      const r = await fetch(`${n.url}/api/v1/sandboxes`);
      expect(r.status).toBe(200);
      expect(serializers.pendingCount).toBe(atStart - 1);
      // Every response schema of the API compiles (Fastify's start-up used to prove it).
      expect(serializers.compileAll()).toBe(atStart - 1);
      expect(serializers.pendingCount).toBe(0);
      expect((await fetch(`${n.url}/api/v1/sandboxes`)).status).toBe(200);
    } finally {
      await n.close();
      await store.close();
    }
  });

  it("serializes by the route's schema (fields it does not name are left out) and reports a schema that cannot compile", async () => {
    const serializers = new LazySerializers();
    const app = Fastify({ schemaController: { compilersFactory: { buildSerializer: serializers.factory } } });
    app.get('/ok', { schema: { response: { 200: { type: 'object', properties: { a: { type: 'string' } } } } } }, async () => ({ a: 'x', secret: 'y' }));
    app.get('/broken', { schema: { response: { 200: { type: 'object', properties: { a: { $ref: '#/definitions/missing' } } } } } }, async () => ({ a: 'x' }));
    try {
      await app.ready();
      expect((await app.inject({ url: '/ok' })).body).toBe('{"a":"x"}');
      expect(() => serializers.compileAll()).toThrow(/missing/);
    } finally {
      await app.close();
    }
  });
});
