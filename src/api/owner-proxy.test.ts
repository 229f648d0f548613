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
    // Reads by the request, not by the sandbox watch's own periodic check (sandbox-events.ts refresh),
    // which may fall inside the window on a busy host.
    const stacks: string[] = [];
    const original = reads.getMockImplementation();
    reads.mockImplementation(function (this: unknown, ...args: Parameters<typeof api.node.repo.getSandbox>) {
      stacks.push(new Error().stack ?? '');
      return (original ?? Object.getPrototypeOf(api.node.repo).getSandbox).apply(api.node.repo, args);
    });
    try {
      for (const accept of ['application/json', 'application/x-ndjson']) {
        reads.mockClear();
        stacks.length = 0;
        const res = await fetch(`${api.url}/api/v1/sandboxes/${sb.id}/exec`, {
          method: 'POST', headers: { 'content-type': 'application/json', accept }, body: JSON.stringify({ cmd: ['true'] }),
        });
        expect(res.status).toBe(200);
        await res.text();
        const byRequest = reads.mock.calls.filter(([id], i) => id === sb.id && !stacks[i]!.includes('sandbox-events'));
        expect(byRequest, `reads of the record: ${stacks.join('\n---\n')}`).toHaveLength(1);
      }
    } finally {
      reads.mockRestore();
      await api.node.sandboxes.delete(sb.id);
    }
  });
});
