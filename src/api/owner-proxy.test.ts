import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startInProcessApi } from '../daemon/in-process-api.test-support.js';

describe('owner proxy', () => {
  let api: Awaited<ReturnType<typeof startInProcessApi>>;
  beforeAll(async () => {
    api = await startInProcessApi();
  });
  afterAll(() => api.close());

  it('reads the sandbox record once per exec: the owner check hands its record to the service', async () => {
    const sb = await api.node.sandboxes.create({});
    const reads = vi.spyOn(api.node.repo, 'getSandbox');
    try {
      for (const accept of ['application/json', 'application/x-ndjson']) {
        reads.mockClear();
        const res = await fetch(`${api.url}/api/v1/sandboxes/${sb.id}/exec`, {
          method: 'POST', headers: { 'content-type': 'application/json', accept }, body: JSON.stringify({ cmd: ['true'] }),
        });
        expect(res.status).toBe(200);
        await res.text();
        expect(reads.mock.calls.filter(([id]) => id === sb.id)).toHaveLength(1);
      }
    } finally {
      reads.mockRestore();
      await api.node.sandboxes.delete(sb.id);
    }
  });
});
